"""``python -m trajmon`` is the ``trajmon`` command."""

from .cli import main

main()
