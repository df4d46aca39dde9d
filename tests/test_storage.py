import os

import pytest

from analysis.storage import BlobChanged, ContainerNotFound, MediaStore, blob_service_client


@pytest.fixture
def store(blob_service):
    return MediaStore(blob_service)


def test_list_inputs_skips_processed_and_sorts(store, container):
    for name in ("b.jpg", "a.mp4", "processed/a.csv", "sub/c.png"):
        container.upload_blob(name, b"data")
    inputs, has_results = store.list_inputs(container.container_name)
    assert [b.name for b in inputs] == ["a.mp4", "b.jpg", "sub/c.png"]
    assert all(b.etag and not b.etag.startswith('"') and b.size == 4 for b in inputs)
    assert has_results


def test_list_inputs_says_when_there_are_no_results(store, container):
    container.upload_blob("sub/processed/x.csv", b"data")  # in an upload's own folder: not results
    inputs, has_results = store.list_inputs(container.container_name)
    assert [b.name for b in inputs] == ["sub/processed/x.csv"] and not has_results


def test_missing_container(store):
    with pytest.raises(ContainerNotFound):
        store.list_inputs("no-such-container-here")


def test_download_is_pinned_to_the_listed_version(store, container, tmp_path):
    container.upload_blob("a.jpg", b"version one")
    (listed,) = store.list_inputs(container.container_name).inputs
    assert store.read_head(container.container_name, listed, 7) == b"version"
    container.upload_blob("a.jpg", b"version two", overwrite=True)
    with pytest.raises(BlobChanged):
        store.download(container.container_name, listed, tmp_path / "x")
    container.delete_blob("a.jpg")
    with pytest.raises(BlobChanged):
        store.read_head(container.container_name, listed, 7)


def test_upload_into_a_deleted_container(store, blob_service, tmp_path):
    with pytest.raises(ContainerNotFound):
        store.upload_json("gone-container-x", "processed/x.json", {"a": 1}, {})


def test_metadata_under_a_prefix_in_one_listing(store, container):
    assert store.metadata_under(container.container_name, "processed/") == {}
    assert store.upload_json(container.container_name, "processed/r.json", {"a": 1}, {"job_id": "j"}) > 0
    store.upload_json(container.container_name, "other.json", {"a": 1}, {"job_id": "k"})
    assert store.metadata_under(container.container_name, "processed/") == {"processed/r.json": {"job_id": "j"}}
    with pytest.raises(ContainerNotFound):
        store.metadata_under("gone-container-x", "processed/")


@pytest.mark.parametrize(
    "env, trusted, verify",
    [
        ({}, False, True),
        ({"HTTPS_PROXY": "http://proxy:3128"}, True, True),
        ({"REQUESTS_CA_BUNDLE": "/etc/ssl/ca.pem"}, False, "/etc/ssl/ca.pem"),
    ],
)
def test_the_environment_is_read_once_unless_it_names_a_proxy(settings, monkeypatch, env, trusted, verify):
    for name in list(os.environ):
        if name.lower() in (
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
            "requests_ca_bundle",
            "curl_ca_bundle",
        ):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = blob_service_client(settings)
    client.get_service_properties()  # the transport opens its session on the first call
    transport = client._pipeline._transport
    assert transport.session.trust_env is trusted  # trusted: requests walks the environment on every call
    assert transport.connection_config.verify == verify
