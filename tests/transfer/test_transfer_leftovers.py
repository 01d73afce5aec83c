"""Files a target holds at a transferred file's path that no row names: leftovers, replaced, never adopted."""

from __future__ import annotations

import os

from skybutler import Butler
from skybutler.transfer import RegistrySource, import_content

RUN = "src/run"


def test_a_leftover_file_no_row_names_is_replaced_by_the_transferred_one(tmp_path, standard_records):
    source, target = Butler.create(tmp_path / "source", run=RUN), Butler.create(tmp_path / "target")
    try:
        for b in (source, target):
            standard_records.fill(b)
        source.register_dataset_type("calexp", ["instrument", "visit", "detector"], "dict")
        refs = source.put_many([({"v": d}, "calexp", {"instrument": "HSC", "visit": 903334, "detector": d})
                                for d in range(3)])
        paths = source.registry.get_files([r.id for r in refs])
        for ref in refs[:2]:  # as a copy killed mid-way by something other than import_content could leave
            leftover = os.path.join(target.root, paths[ref.id].path)
            os.makedirs(os.path.dirname(leftover), exist_ok=True)
            with open(leftover, "w") as f:
                f.write('{"v": "stale"}')

        report = import_content(target, RegistrySource(source, refs), transfer="copy")

        assert report.datasets_added == 3 and report.files_copied == 3 and report.conflicts == []
        assert [target.get(r)["v"] for r in refs] == [0, 1, 2]
    finally:
        source.close()
        target.close()
