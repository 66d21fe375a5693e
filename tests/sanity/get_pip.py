"""Offline stand-in for ansible-test's pip bootstrap script (get-pip-<version>.py).

ansible-test --venv bootstraps pip in each new virtualenv by downloading
https://ci-files.testing.ansible.com/ansible-test/get-pip-<version>.py, a host this machine cannot reach
(only PyPI is). It looks for a cached copy at ~/.ansible/test/cache/get_pip_<version>.py first, and
tests/sanity/run.sh puts this file there. Like the real script, it takes `pip install` arguments
(e.g. `--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel`): it installs the pip wheel
bundled with the interpreter (ensurepip, no network), then lets that pip install the requested
packages from PyPI.
"""

import subprocess
import sys

# Options of get-pip.py that `pip install` does not know.
GET_PIP_ONLY = ('--no-setuptools', '--no-wheel')


def main():
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    # A child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment, which would
    # hide the pip.conf (CA bundle) from the install below if it ran in this process.
    subprocess.check_call([sys.executable, '-m', 'ensurepip'])
    subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)


if __name__ == '__main__':
    main()
