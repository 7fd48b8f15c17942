DROP INDEX hitl_approvals_run;
