"""``python -m repscope``: the command line (the same as the ``repscope`` script)."""

from repscope.cli import main

if __name__ == "__main__":
    main()
