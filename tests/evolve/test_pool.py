"""The worker pool's connection helpers (the pool itself runs in test_loop.py and test_resume.py)."""

import logging

import pytest

from evolve.pool import ClusterUnreachableError, _QuietAuthBanner, check_reachable


def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("ray._private.authentication.authentication_token_setup", level, __file__, 1,
                             message, None, None)


def test_only_the_token_banner_is_quieted():
    quiet = _QuietAuthBanner()
    assert not quiet.filter(record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=..."))
    assert quiet.filter(record("Token authentication is disabled for this Ray cluster. Anyone with network access"))
    assert quiet.filter(record("Token authentication is enabled but no authentication token was found"))


@pytest.mark.parametrize("address", ["localhost", "host:port", "ray://nowhere"])
def test_malformed_addresses_are_refused(address):
    with pytest.raises(ClusterUnreachableError, match="is not 'host:port'"):
        check_reachable(address)


def test_auto_is_left_to_ray():
    check_reachable("auto")  # Ray finds the local cluster itself
