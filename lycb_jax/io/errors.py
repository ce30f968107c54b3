"""The one exception for bad input: :class:`InputError`."""


class InputError(ValueError):
    """Input the library refuses: a file, structure, config or data set it cannot use. The message is one
    line naming the file (where there is one), the problem and the fix; ``lycb-jax`` prints it as
    ``error: ...`` and exits with code 2. A subclass of ValueError, so ``except ValueError`` still works."""
