import pytest

from analysis.config import ConfigError, load_settings
from analysis.web.app import create_app


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL", "OPENFACE_BIN_DIR", "API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENFACE_BIN_DIR", str(tmp_path))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    return monkeypatch


def test_reads_the_environment(clean_env):
    clean_env.setenv("API_KEYS", f" {'a' * 32} , {'b' * 40},,")
    clean_env.setenv("MAX_ATTEMPTS", "5")
    settings = load_settings()
    assert settings.api_key_list == ["a" * 32, "b" * 40]
    assert settings.max_attempts == 5
    assert settings.poison_queue_name == "openface-jobs-poison"


def test_missing_bin_dir_is_named(clean_env):
    clean_env.delenv("OPENFACE_BIN_DIR")
    with pytest.raises(ConfigError, match="OPENFACE_BIN_DIR"):
        load_settings()


def test_bin_dir_that_does_not_exist_is_named(clean_env, tmp_path):
    clean_env.setenv("OPENFACE_BIN_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="OPENFACE_BIN_DIR.*not a directory"):
        load_settings()


def test_storage_is_required(clean_env):
    clean_env.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        load_settings()


@pytest.mark.parametrize(
    "name,value",
    [
        ("OPENFACE_TIMEOUT_SECONDS", "soon"),
        ("OPENFACE_TIMEOUT_SECONDS", "0"),
        ("MAX_ATTEMPTS", "0"),
        ("JOB_QUEUE_NAME", "Bad_Name"),
        ("LOG_LEVEL", "LOUD"),
        ("QUEUE_VISIBILITY_SECONDS", "1"),
    ],
)
def test_bad_values_are_named(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_a_lost_message_is_never_called_lost_before_a_retry_delay_is_over(clean_env):
    clean_env.setenv("MAX_ATTEMPTS", "5")  # the last retry waits 40 s
    clean_env.setenv("JOB_REQUEUE_SECONDS", "30")
    with pytest.raises(ConfigError, match="JOB_REQUEUE_SECONDS must be over 40"):
        load_settings()
    clean_env.setenv("JOB_REQUEUE_SECONDS", "41")
    assert load_settings().job_requeue_seconds == 41


def test_web_refuses_to_start_without_api_keys(clean_env):
    with pytest.raises(ConfigError, match="API_KEYS"):
        create_app(load_settings())


@pytest.mark.parametrize("command", ["bin/web", "bin/worker"])
def test_processes_refuse_to_start_and_name_the_setting(command, tmp_path):
    import subprocess

    from harness import ROOT, free_port, process_env

    env = process_env(
        AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true",
        API_KEYS="k" * 32,
        HOST="127.0.0.1",
        PORT=str(free_port()),
    )
    env.pop("OPENFACE_BIN_DIR", None)
    done = subprocess.run([str(ROOT / command)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "OPENFACE_BIN_DIR" in done.stdout + done.stderr


def test_worker_without_storage_exits_with_a_reason():
    import subprocess

    from harness import ROOT, STANDIN_BIN_DIR, free_port, process_env

    dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    env = process_env(
        AZURE_STORAGE_CONNECTION_STRING=f"AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint={dead};QueueEndpoint={dead};",
        OPENFACE_BIN_DIR=str(STANDIN_BIN_DIR),
        STORAGE_RETRY_TOTAL="0",
    )
    done = subprocess.run([str(ROOT / "bin/worker")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.startswith("worker: storage unreachable")


@pytest.mark.parametrize("keys", ["short", f"{'a' * 32},{'b' * 31}", "a" * 31])
def test_short_api_keys_are_refused(clean_env, keys):
    clean_env.setenv("API_KEYS", keys)
    with pytest.raises(ConfigError, match="API_KEYS: .*at least 32"):
        load_settings()


def test_the_web_refuses_to_start_with_a_short_key(tmp_path):
    import subprocess

    from harness import ROOT, STANDIN_BIN_DIR, free_port, process_env

    env = process_env(
        AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true",
        API_KEYS="secret",
        OPENFACE_BIN_DIR=str(STANDIN_BIN_DIR),
        HOST="127.0.0.1",
        PORT=str(free_port()),
    )
    done = subprocess.run([str(ROOT / "bin/web")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "API_KEYS" in done.stderr and "at least 32" in done.stderr
