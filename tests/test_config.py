"""The repository configuration: one-line errors naming file and key, secrets never shown, env overrides merged."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from skybutler import Butler, ConfigError, RepositoryConfig
from skybutler.cli import main
from skybutler.config import CONFIG_FILE, redact_text

KEY, SECRET = "AKIAEXAMPLEKEY7Q2Z", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLE"
SKYBUTLER = str(Path(sys.executable).with_name("skybutler"))


def _read(tmp_path, text: str) -> RepositoryConfig:
    (tmp_path / CONFIG_FILE).write_text(text)
    return RepositoryConfig.read(tmp_path, environ={})


@pytest.mark.parametrize("text, message", [
    ("- registry\n- datastore\n", "skybutler.yaml: expected a mapping of sections (registry, datastore, templates, "
                                  "formats, pipelines), got a list"),
    ("just words\n", "got a string"),
    ("registry: {db: [1,\n", "skybutler.yaml is not valid YAML: line 2 column 1: expected the node content"),
    ("registry:\n  bd: sqlite://\n", "skybutler.yaml: registry.bd: unknown key"),
    ("colour: blue\n", "skybutler.yaml: colour: unknown key"),
    ("pipelines: {max_quanta: lots}\n", "pipelines.max_quanta: should be a valid integer, unable to parse string as "
                                        "an integer (got 'lots')"),
    ("datastore: s3://bucket\n", "datastore: expected a mapping, got a string"),
    ("datastore: {storage_options: [a, b]}\n", "datastore.storage_options: expected a mapping, got a list"),
    ("1: 2\n", "1: keys must be strings"),
    ('"a\\nb": 1\n', "skybutler.yaml: 'a\\nb': unknown key"),  # a key with a line break stays on one line
    ("\xff\xfe", None),
])
def test_a_bad_file_is_one_config_error_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / CONFIG_FILE
    if text == "\xff\xfe":
        path.write_bytes(b"\xff\xfe registry")
        with pytest.raises(ConfigError, match="is not valid YAML: not UTF-8"):
            RepositoryConfig.read(tmp_path, environ={})
        return
    with pytest.raises(ConfigError) as info:
        _read(tmp_path, text)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_several_problems_are_listed_on_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        _read(tmp_path, "registry: {a: 1, b: 2, c: 3, d: 4}\n")
    assert str(info.value).endswith("registry.a: unknown key; registry.b: unknown key; registry.c: unknown key; "
                                    "and 1 more")


def test_a_wrong_value_is_echoed_without_its_password(tmp_path):
    with pytest.raises(ConfigError) as info:
        _read(tmp_path, "pipelines: {max_quanta: 'postgresql://me:pw123456@host/db'}\n")
    assert "(got 'postgresql://me:***@host/db')" in str(info.value) and "pw123456" not in str(info.value)


def test_secrets_are_redacted_in_every_printed_form():
    config = RepositoryConfig.from_mapping({
        "registry": {"db": f"postgresql://me:{SECRET}@db.example.org:5432/survey"},
        "datastore": {"root": "s3://bucket/repo", "storage_options": {
            "key": KEY, "secret": SECRET, "endpoint_url": "https://s3.example.org",
            "client_kwargs": {"aws_session_token": SECRET, "region_name": "us-east-1"}}},
        "templates": {"dataset_types": {"token": "{run}/{dataset_type}/{visit}"}},
    })
    for text in (config.to_yaml(), repr(config), str(config), repr(config.datastore), repr(config.registry)):
        assert SECRET not in text and KEY not in text
        assert "***" in text
    dumped = config.to_yaml()
    assert "postgresql://me:***@db.example.org:5432/survey" in dumped
    assert "https://s3.example.org" in dumped and "us-east-1" in dumped
    assert "{run}/{dataset_type}/{visit}" in dumped  # a dataset type named like a secret is no secret
    assert SECRET in config.to_yaml(secrets=True)
    assert config.holds_secrets and not RepositoryConfig().holds_secrets


def test_free_text_redaction_hides_urls_and_assignments():
    text = redact_text(f"connect postgresql://me:{SECRET}@h/db with {{'key': '{KEY}', 'secret': '{SECRET}'}} "
                       f"aws_secret_access_key={SECRET} keys: 3 monkey=1")
    assert SECRET not in text and KEY not in text
    assert text.endswith("keys: 3 monkey=1")


def test_a_file_holding_a_secret_is_written_for_its_owner_only(tmp_path):
    secret = RepositoryConfig.from_mapping({"datastore": {"storage_options": {"secret": SECRET}}})
    plain = RepositoryConfig()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    secret.write(tmp_path / "a")
    plain.write(tmp_path / "b")
    assert stat.S_IMODE((tmp_path / "a" / CONFIG_FILE).stat().st_mode) == 0o600
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "b" / CONFIG_FILE).stat().st_mode) == 0o666 & ~umask
    assert RepositoryConfig.read(tmp_path / "a", environ={}) == secret  # the file itself keeps the secret
    # Rewriting a world-readable file with a secret in it makes it private (a new file, renamed over).
    secret.write(tmp_path / "b")
    assert stat.S_IMODE((tmp_path / "b" / CONFIG_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [CONFIG_FILE]  # no temporary left


def test_mapping_overrides_from_the_environment_merge_over_the_file(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(
        "datastore:\n  storage_options:\n    endpoint_url: http://s3.local\n    client_kwargs: {region_name: a}\n")
    env = {"SKYBUTLER_DATASTORE_STORAGE_OPTIONS": json.dumps({"key": KEY, "client_kwargs": {"verify": False}}),
           "SKYBUTLER_REGISTRY_SYNC_EVERY_COMMIT": "true", "SKYBUTLER_UNRELATED": "x"}
    config = RepositoryConfig.read(tmp_path, environ=env)
    assert config.datastore.storage_options == {"endpoint_url": "http://s3.local", "key": KEY,
                                                "client_kwargs": {"region_name": "a", "verify": False}}
    assert config.registry.sync_every_commit is True
    with pytest.raises(ConfigError, match="SKYBUTLER_DATASTORE_STORAGE_OPTIONS is not valid YAML/JSON"):
        RepositoryConfig.read(tmp_path, environ={"SKYBUTLER_DATASTORE_STORAGE_OPTIONS": '{"key": '})
    with pytest.raises(ConfigError, match="SKYBUTLER_DATASTORE_COLOUR: datastore has no setting 'colour'"):
        RepositoryConfig.read(tmp_path, environ={"SKYBUTLER_DATASTORE_COLOUR": "blue"})


@pytest.mark.s3
def test_config_show_never_prints_the_s3_credentials(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    options = {**options, "key": KEY, "secret": SECRET}
    root = tmp_path / "repo"
    Butler.create(root, datastore=f"s3://{bucket}/repo", config={"datastore": {"storage_options": options}}).close()
    assert stat.S_IMODE((root / CONFIG_FILE).stat().st_mode) == 0o600
    result = CliRunner().invoke(main, ["config", "show", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert KEY not in result.output and SECRET not in result.output
    assert "key: '***'" in result.output and options["endpoint_url"] in result.output
    assert KEY not in repr(Butler(root).datastore) and SECRET not in Butler(root).dump_config()


@pytest.mark.s3
def test_credentials_from_the_environment_reach_a_child_process(tmp_path, s3_bucket):
    """The file names only the endpoint; a child process gets the keys from the environment, and uses them.

    One child process (the ingest that writes to S3): registering the dataset type before it
    needs no keys and is the same library call in this process; `config show` reads the
    same environment in this process.
    """
    bucket, options = s3_bucket
    endpoint_only = {k: v for k, v in options.items() if k not in ("key", "secret")}
    root = tmp_path / "repo"
    with Butler.create(root, datastore=f"s3://{bucket}/repo",
                       config={"datastore": {"storage_options": endpoint_only}}) as butler:
        butler.register_dataset_type("blob", [], "dict")
    assert "testing" not in (root / CONFIG_FILE).read_text()
    keys = {"SKYBUTLER_DATASTORE_STORAGE_OPTIONS": json.dumps({"key": options["key"], "secret": options["secret"]})}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= keys | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    (tmp_path / "a.json").write_text('{"a": 1}')
    done = subprocess.run([SKYBUTLER, "ingest", str(root), "--run", "r", "-t", "blob", str(tmp_path / "a.json")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # The file was put on S3 with the environment's keys.
    assert any(key.startswith("repo/r/") for key in _s3_keys(bucket, options))
    shown = CliRunner().invoke(main, ["config", "show", str(root)], env=keys, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert options["endpoint_url"] in shown.output and "secret: '***'" in shown.output


def _s3_keys(bucket, options):
    import boto3

    client = boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


BAD_FILES = [
    ("registry: {db: [1,\n", "is not valid YAML: line 2 column 1"),
    ("templates: {colour: blue}\n", "templates.colour: unknown key"),
    ("- a list\n", "expected a mapping of sections"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_create_reads_its_config_file_as_a_repository_reads_its_own(tmp_path, text, message):
    """One reader: the file given to create fails exactly as the same text in skybutler.yaml does."""
    given = tmp_path / "bad.yaml"
    given.write_text(text)
    with pytest.raises(ConfigError) as from_create:
        Butler.create(tmp_path / "repo", config=given)
    with pytest.raises(ConfigError) as from_repository:
        _read(tmp_path, text)
    assert message in str(from_create.value) and str(given) in str(from_create.value)
    assert str(from_create.value).replace(str(given), "FILE") == str(from_repository.value).replace(
        str(tmp_path / CONFIG_FILE), "FILE")
    assert not (tmp_path / "repo").exists()  # nothing half-made


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_create_with_a_bad_config_file_is_one_line_and_leaves_nothing(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    result = CliRunner().invoke(main, ["create", str(tmp_path / "repo"), "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [result.output.strip()] and message in result.output
    assert "Traceback" not in result.output and str(tmp_path / "bad.yaml") in result.output
    assert not (tmp_path / "repo").exists()


def test_config_show_output_creates_a_repository_configured_alike(tmp_path):
    """`config show`'s output is a configuration file: create --config with it reproduces the configuration."""
    first, second = tmp_path / "first", tmp_path / "second"
    Butler.create(first, config={
        "templates": {"default": "{run}/{dataset_type}/{dataset_type}_{data_id}_v2",
                      "dataset_types": {"calexp": "{run}/cal/{visit:08d}_{detector:03d}"}},
        "formats": {"storage_classes": {"table": "fits"}},
        "pipelines": {"max_quanta": 5000},
        "datastore": {"checksum": "sha256"},
    }).close()
    runner = CliRunner()
    shown = runner.invoke(main, ["config", "show", str(first)], catch_exceptions=False)
    assert shown.exit_code == 0 and "# dimension universe:" in shown.output
    (tmp_path / "shown.yaml").write_text(shown.output)
    assert RepositoryConfig.from_file(tmp_path / "shown.yaml") == RepositoryConfig.read(first, environ={})
    created = runner.invoke(main, ["create", str(second), "--config", str(tmp_path / "shown.yaml")],
                            catch_exceptions=False)
    assert created.exit_code == 0, created.output
    assert RepositoryConfig.read(second, environ={}) == RepositoryConfig.read(first, environ={})
    again = runner.invoke(main, ["config", "show", str(second)], catch_exceptions=False)
    assert again.output == shown.output


def test_the_universe_in_config_show_is_the_repository_universe(tmp_path):
    import yaml

    Butler.create(tmp_path / "repo").close()
    shown = CliRunner().invoke(main, ["config", "show", str(tmp_path / "repo")], catch_exceptions=False).output
    commented = shown.split("# dimension universe:\n", 1)[1]
    universe = yaml.safe_load("".join(line.removeprefix("# ") + "\n" for line in commented.splitlines()))
    assert universe == Butler(tmp_path / "repo", writeable=False).universe.document


def test_an_empty_config_file_is_the_default_configuration(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert RepositoryConfig.from_file(tmp_path / "empty.yaml") == RepositoryConfig()


def test_from_file_applies_environment_overrides_only_when_given(tmp_path):
    (tmp_path / "c.yaml").write_text("datastore: {checksum: md5}\n")
    env = {"SKYBUTLER_DATASTORE_CHECKSUM": "sha256"}
    assert RepositoryConfig.from_file(tmp_path / "c.yaml").datastore.checksum == "md5"
    assert RepositoryConfig.from_file(tmp_path / "c.yaml", environ=env).datastore.checksum == "sha256"
