"""workflow.yaml in: everything here reads text and returns a validated, frozen Workflow or
a SpecError listing every problem as file:line:col.

- checker.py: `load`/`loads` and the document's top level; the parts are checked by
  images.py, steps.py and matrix.py over the shape checks of shapes.py
- rules.py: the key lists, patterns and limits (the JSON Schema of schema.py is built from them)
- yamlpos.py: YAML with positions (libyaml's C parser where present, else pure Python)
- inputs.py: the path rules and the one reading of a deffile:/dockerfile:, shared with plan.py
- expand.py: sweep forms and matrix expansion, shared with plan.py
- placeholders.py, units.py: `run:` placeholders; durations and sizes
"""
