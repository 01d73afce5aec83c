"""An object-store datastore sees files other processes wrote after it listed a directory."""

from __future__ import annotations

import boto3

from skybutler.datastore import Datastore


def test_a_file_put_by_someone_else_after_a_listing_is_seen(s3_bucket):
    bucket, options = s3_bucket
    store = Datastore(f"s3://{bucket}/repo", storage_options=options)
    store.write_temporary("run/a.txt", lambda f: f.write(b"a"))
    list(store.walk())  # a listing: fsspec's listings cache would keep it
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="repo/run/b.txt", Body=b"b")  # another process's stage-out
    assert store.exists("run/b.txt")
    assert Datastore(f"s3://{bucket}/repo", storage_options=options).exists("run/b.txt")
