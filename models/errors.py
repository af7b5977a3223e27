"""Typed errors for structures the product refuses, each with a human message.

The service maps every :class:`StructureError` to HTTP 422 with ``str(error)`` as
the detail; the CLI prints it and carries on with the next file.
"""

from __future__ import annotations


class StructureError(ValueError):
    """Base class: this input cannot be turned into an energy grid."""


class InvalidCIFError(StructureError):
    """The file is not a readable CIF (not text, no data block, no cell, unparsable)."""


class EmptyStructureError(StructureError):
    """The CIF parses but holds no atoms."""


class UnknownElementError(StructureError):
    """An element has no force-field parameters.

    Attributes
    ----------
    elements : list of str
        The offending element symbols, sorted.
    """

    def __init__(self, elements: list[str], force_field: str = "UFF") -> None:
        self.elements = sorted(set(elements))
        super().__init__(
            f"no {force_field} Lennard-Jones parameters for element(s) {', '.join(self.elements)}"
        )


class OverlappingAtomsError(StructureError):
    """Two fully occupied sites sit closer than the overlap tolerance."""


class DegenerateCellError(StructureError):
    """The unit cell has (near-)zero volume or a perpendicular width too small to grid."""


class StructureTooLargeError(StructureError):
    """The minimum-image supercell would hold more atoms than the configured limit."""
