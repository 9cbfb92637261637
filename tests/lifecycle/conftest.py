import pytest

from tests.support.sshd import SshServer, have_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not have_sshd():
        pytest.fail("/usr/sbin/sshd missing: run ./install.sh --dev (installs Debian's openssh-server)")
    srv = SshServer(tmp_path_factory.mktemp("sshd"))
    srv.start()
    yield srv
    srv.stop()
