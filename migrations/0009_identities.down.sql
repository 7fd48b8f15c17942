DROP TABLE console_sessions;
DROP TABLE api_tokens;
