"""medft's version, in a module of its own: what records it (a run's record, a prepared
dataset's report, an export, a Space's requirements) imports it from here, not from the
package root, which reaches the inference engine for `medft.load_image`."""

__version__ = "0.1.0"
