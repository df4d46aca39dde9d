from analysis.web.auth import key_is_valid


def test_key_must_match_one_exactly():
    keys = ["alpha", "beta"]
    assert key_is_valid("beta", keys)
    for wrong in ("", "bet", "betaa", "BETA", "alpha,beta"):
        assert not key_is_valid(wrong, keys)


def test_no_keys_accepts_nothing():
    assert not key_is_valid("", [])


def test_non_ascii_key_is_refused_not_an_error():
    assert not key_is_valid("ключ", ["key"])
