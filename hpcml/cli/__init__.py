"""The `hpcml` command line: click commands that parse options, call one `hpcml.api`
function and render its result (text, tables, JSON, progress). No decisions live here."""
