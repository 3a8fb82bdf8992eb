"""Sub-commands of the ``maven-fast`` CLI (see maven_fast/cli.py)."""
