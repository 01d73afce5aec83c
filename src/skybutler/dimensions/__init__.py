"""The dimension universe, sky regions and overlaps."""

from .regions import Circle, Point, Region, Shape, overlapping_pairs
from .universe import DimensionUniverse, Element

__all__ = ["Circle", "DimensionUniverse", "Element", "Point", "Region", "Shape", "overlapping_pairs"]
