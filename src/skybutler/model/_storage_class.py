from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageClass:
    """How a dataset is held in memory and which file formats can store it.

    Parameters
    ----------
    name
        Short name used in dataset type definitions (``"image"``).
    python_type
        Dotted name of the in-memory type, for messages.
    formats
        File formats that can store it, the first being the default.
    """

    name: str
    python_type: str
    formats: tuple[str, ...]
    doc: str = ""


STORAGE_CLASSES: dict[str, StorageClass] = {
    sc.name: sc
    for sc in (
        StorageClass("dict", "dict", ("json", "yaml"), "A mapping of plain values (metadata, configs, QC values)."),
        StorageClass("array", "numpy.ndarray", ("npy",), "A numpy array."),
        StorageClass("image", "skybutler.Image", ("fits",), "Pixels with a header (and optional planes)."),
        StorageClass("table", "pyarrow.Table", ("parquet", "fits"), "A table of columns."),
        StorageClass("bytes", "bytes", ("raw",), "Opaque bytes, stored as they are."),
        StorageClass("text", "str", ("txt",), "Text (logs), stored as UTF-8."),
        StorageClass("object", "object", ("pickle",), "Any Python object (pickle: opt-in only)."),
    )
}


def storage_class(name: str) -> StorageClass:
    """Look up a storage class by name, with a clear error listing the known ones."""
    try:
        return STORAGE_CLASSES[name]
    except KeyError:
        from ..errors import StorageClassError

        raise StorageClassError(
            f"Unknown storage class {name!r}; known: {', '.join(sorted(STORAGE_CLASSES))}"
        ) from None
