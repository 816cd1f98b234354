"""The settings: each is declared once (backend/config.py), README's tables agree with the declarations,
and bad values are refused with one line naming the variable."""
from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import (ConfigError, ServerSettings, Settings, markdown_table, read_environment, table_rows,
                            variables)

from .conftest import ROOT

SETTINGS_CLASSES = (Settings, ServerSettings)


def readme_tables() -> list[tuple[str, str, str]]:
    """The rows of every table in README's "Configuration" section, as (variable, default, meaning)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            assert len(cells) == 3, f"README's configuration row should have 3 cells: {line}"
            rows.append(tuple(cells))
    return rows


def test_readme_configuration_tables_match_the_declared_settings():
    declared = [row for cls in SETTINGS_CLASSES for row in table_rows(cls)]
    documented = readme_tables()
    assert [row[0] for row in documented] == [row[0] for row in declared], \
        "README's configuration tables and backend/config.py name different variables; " \
        "`python -m backend.config` prints the tables"
    for readme_row, declared_row in zip(documented, declared):
        assert readme_row == declared_row, f"README says {readme_row}, backend/config.py declares {declared_row}"


def test_every_field_is_declared_with_a_variable_and_a_meaning():
    for cls in SETTINGS_CLASSES:
        declared = {f.name for f, _ in variables(cls)}
        assert declared == set(cls.__dataclass_fields__), f"{cls.__name__}: fields without a variable"
        names = [name for _, variable in variables(cls) for name in variable.names]
        assert len(names) == len(set(names)), names
        for f, variable in variables(cls):
            assert variable.meaning and "\n" not in variable.meaning and "|" not in variable.meaning, f.name


def test_every_allowed_value_is_named_in_its_meaning():
    for cls in SETTINGS_CLASSES:
        for f, variable in variables(cls):
            for value in variable.allowed() or ():
                assert f"`{value}`" in variable.meaning, (f.name, value)


def test_the_declared_defaults_are_the_dataclass_defaults():
    assert Settings.from_env({}) == Settings()
    assert ServerSettings.from_env({}) == ServerSettings()
    assert ServerSettings().address == "127.0.0.1:8000"


def test_markdown_table_is_readmes():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for cls in SETTINGS_CLASSES:
        assert markdown_table(cls) in text


@pytest.mark.parametrize("env, message", [
    ({"LOOKALIKE_IMAGE_SIZE": "big"}, "LOOKALIKE_IMAGE_SIZE='big' is not valid: expected a positive int"),
    ({"LOOKALIKE_IMAGE_SIZE": "0"}, "LOOKALIKE_IMAGE_SIZE='0' is not valid: expected a positive int"),
    ({"LOOKALIKE_BATCH_SIZE": "-3"}, "LOOKALIKE_BATCH_SIZE='-3' is not valid: expected a positive int"),
    ({"LOOKALIKE_ES_TIMEOUT": "soon"}, "LOOKALIKE_ES_TIMEOUT='soon' is not valid: expected a positive float"),
    ({"LOOKALIKE_SQUARE": "maybe"}, "LOOKALIKE_SQUARE='maybe' is not valid: expected a positive bool"),
    ({"LOOKALIKE_POOLING": " median "}, "LOOKALIKE_POOLING='median' is not valid: use one of avg, max, gem, rmac"),
    ({"LOOKALIKE_PRECISION": "half"},
     "LOOKALIKE_PRECISION='half' is not valid: use one of auto, float32, bfloat16, int8"),
    ({"LOOKALIKE_ES_INDEX_TYPE": "flat"},
     "LOOKALIKE_ES_INDEX_TYPE='flat' is not valid: use one of hnsw, int8_hnsw, int4_hnsw, bbq_hnsw"),
    ({"LOOKALIKE_STORE": "ftp://x"}, "LOOKALIKE_STORE='ftp://x' is not valid: use 'embedded' or Elasticsearch "
                                     "URLs such as http://localhost:9200 (several nodes separated by commas)"),
    ({"LOOKALIKE_STORE": "http://a:9200,,http://b:9200"},
     "LOOKALIKE_STORE='http://a:9200,,http://b:9200' is not valid: use 'embedded' or Elasticsearch "
     "URLs such as http://localhost:9200 (several nodes separated by commas)"),
    ({"LOOKALIKE_ES_REPLICAS": "one"}, "LOOKALIKE_ES_REPLICAS='one' is not valid: expected a whole number of "
     "replicas (such as 1) or a range that follows the number of nodes (such as 0-1 or 0-all)"),
    ({"LOOKALIKE_ES_SHARDS": "0"}, "LOOKALIKE_ES_SHARDS='0' is not valid: expected a positive int"),
])
def test_bad_values_are_refused_with_one_line_naming_the_variable(env, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


def test_values_are_parsed_and_blank_means_the_default():
    s = Settings.from_env({"LOOKALIKE_DATA_DIR": "~/pictures-index", "LOOKALIKE_SQUARE": " on ",
                           "LOOKALIKE_ES_WAIT": "2.5", "LOOKALIKE_API_KEY": "  ", "LOOKALIKE_POOLING": "",
                           "LOOKALIKE_CORS_ORIGINS": " http://a.example,, * ", "LOOKALIKE_STORE": "https://es:9200"})
    assert s.data_dir == Path("~/pictures-index").expanduser() and s.square is True and s.es_wait == 2.5
    assert s.api_key is None and s.pooling == "gem" and s.cors_origins == ("http://a.example", "*")
    assert s.uses_elasticsearch and isinstance(s.image_size, int) and isinstance(s.es_timeout, float)
    assert s.es_urls == ["https://es:9200"] and s.es_shards == 1 and s.es_replicas == "0-1"


def test_several_elasticsearch_nodes_are_one_store():
    s = Settings.from_env({"LOOKALIKE_STORE": "http://a:9200, http://b:9200 ,https://u:p@c:9200",
                           "LOOKALIKE_ES_SHARDS": "3", "LOOKALIKE_ES_REPLICAS": "2"})
    assert s.es_urls == ["http://a:9200", "http://b:9200", "https://u:p@c:9200"] and s.uses_elasticsearch
    assert (s.es_shards, s.es_replicas) == (3, "2")
    assert Settings.from_env({"LOOKALIKE_ES_REPLICAS": "0-all"}).es_replicas == "0-all"
    assert Settings.from_env({}).es_urls == []


def test_server_settings_parse_whole_numbers_and_their_fallbacks():
    with pytest.raises(ConfigError) as caught:
        ServerSettings.from_env({"GUNICORN_TIMEOUT": "-1"})
    assert str(caught.value) == "GUNICORN_TIMEOUT='-1' is not valid: expected a whole number"
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY='many'"):   # checked even when not used
        ServerSettings.from_env({"GUNICORN_WORKERS": "3", "WEB_CONCURRENCY": "many"})
    assert ServerSettings.from_env({"WEB_CONCURRENCY": "5"}).workers == 5
    assert ServerSettings.from_env({"GUNICORN_WORKERS": "3", "WEB_CONCURRENCY": "5"}).workers == 3
    server = ServerSettings.from_env({"HOST": "0.0.0.0", "PORT": "9000", "GUNICORN_ACCESS_LOG": "",
                                      "GUNICORN_MAX_REQUESTS": "0"})
    assert server.address == "0.0.0.0:9000" and server.access_log is None and server.max_requests == 0
    assert ServerSettings.from_env({"GUNICORN_BIND": "unix:/tmp/s", "HOST": "x"}).address == "unix:/tmp/s"


def test_settings_are_read_from_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("LOOKALIKE_THUMBNAIL_SIZE", "128")
    monkeypatch.setenv("GUNICORN_THREADS", "7")
    assert Settings.from_env().thumbnail_size == 128
    assert read_environment(ServerSettings).threads == 7

