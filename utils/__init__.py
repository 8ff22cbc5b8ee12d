"""The shared code of the book: every helper the chapters teach lives here, once.

Import modules by name (``from utils import tb``); importing this package has no side effects and
pulls in neither torch nor TensorFlow.
"""

__version__ = "0.1.0"
