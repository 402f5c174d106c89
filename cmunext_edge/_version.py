"""The toolkit version, in a module of its own so that any layer can read it without importing the
package (and with it the runtime)."""
__version__ = "0.1.0"
