import json
import logging
import warnings

from analysis.logs import configure_logging, log_context


def test_lines_are_json_and_carry_the_job_context(capsys):
    configure_logging("INFO")
    log = logging.getLogger("analysis.test")
    with log_context(job_id="j1", container="c1"):
        with log_context(blob="clips/a b.mp4"):
            log.info("inner", extra={"attempt": 2})
        log.warning("outer")
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0] == {
        **lines[0],
        "message": "inner",
        "job_id": "j1",
        "container": "c1",
        "blob": "clips/a b.mp4",
        "attempt": 2,
        "level": "INFO",
    }
    assert lines[1]["blob"] is None and lines[1]["job_id"] == "j1"
    assert lines[2]["job_id"] is None


def test_python_warnings_are_json_lines(capsys):
    with warnings.catch_warnings():  # puts back pytest's own warning capture afterwards
        logging.captureWarnings(False)  # an earlier configure_logging may have captured already
        configure_logging("INFO")
        warnings.simplefilter("always")
        warnings.warn("an old API", FutureWarning, stacklevel=1)
        logging.captureWarnings(False)
    line = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert line["logger"] == "py.warnings" and line["level"] == "WARNING"
    assert "FutureWarning: an old API" in line["message"]
