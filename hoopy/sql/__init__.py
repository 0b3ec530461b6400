"""Reading SQL text as MySQL and MariaDB read it (sans-IO, no trio).

- ``lexer``: one tokenizer over the bytes of a statement, aware of executable comments, the
  server's version and the quoting rules of ``sql_mode``; shared by the audit's redaction,
  the session's checks and the guardrails.
- ``credentials``: where a statement carries credentials (``IDENTIFIED BY``, ``PASSWORD()``,
  ``MASTER_PASSWORD``...), from tokens.
- ``checks``: facts the gateway refuses statements for (``LOAD DATA LOCAL INFILE``).
"""
