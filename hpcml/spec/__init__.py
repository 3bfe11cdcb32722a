"""workflow.yaml in: the YAML loader with positions, the checker, placeholders, units and
the JSON Schema. Everything here reads text and returns a validated, frozen Workflow or a
SpecError listing every problem as file:line:col."""
