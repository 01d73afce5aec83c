"""Value types of skybutler: no I/O happens here."""

from ._collection import CollectionType
from ._data_id import DataId, DataIdValue, data_ids_of_tuples
from ._dataset import (
    DatasetRef,
    DatasetType,
    dataset_id_for_ingest,
    dataset_ids_for_ingest,
    new_dataset_id,
    new_dataset_ids,
    new_id,
    new_ids,
    uuids_from_hex,
)
from ._image import Image
from ._storage_class import STORAGE_CLASSES, StorageClass, storage_class

__all__ = [
    "STORAGE_CLASSES",
    "CollectionType",
    "DataId",
    "DataIdValue",
    "DatasetRef",
    "DatasetType",
    "Image",
    "StorageClass",
    "data_ids_of_tuples",
    "dataset_id_for_ingest",
    "dataset_ids_for_ingest",
    "new_dataset_id",
    "new_dataset_ids",
    "new_id",
    "new_ids",
    "storage_class",
    "uuids_from_hex",
]
