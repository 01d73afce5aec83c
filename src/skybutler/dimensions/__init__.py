"""The dimension universe, sky regions and overlaps."""

from .regions import Region, overlapping_pairs
from .universe import DimensionUniverse, Element

__all__ = ["DimensionUniverse", "Element", "Region", "overlapping_pairs"]
