"""PostgreSQL: connections and pools, the embedded server, the migrations runner, the
named SQL statements and the run statuses the schema knows."""
