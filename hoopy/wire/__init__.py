from hoopy.accelerated import use_current

use_current(__name__, __path__[0], ["_rowscan", "_rowmask"])
