"""
Fault plugins: the built-in triggers and failures of SPEC §11.

The modules of this package are Twisted plugin modules: each module-level
object providing
L{twisted.plugin.IPlugin} and L{twisted_bcr.interfaces.ITrigger} or
L{twisted_bcr.interfaces.IFailure} is found by
L{twisted_bcr.faults.load_registry}, and so are the plugins in any
directory a user adds for an experiment (C{--fault-plugins DIR}).
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
