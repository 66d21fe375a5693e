# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin layer between Ansible modules and the signing core.

Private to skm.modsign. The one place that builds an AnsibleModule and turns a
ModSignError or a missing library into a clean failure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError


def build_module(argument_spec, **kwargs):
    """An AnsibleModule with full check mode support; keyword arguments pass through."""
    kwargs.setdefault("supports_check_mode", True)
    return AnsibleModule(argument_spec=argument_spec, **kwargs)


def require_cryptography(module):
    """Fail the task with Ansible's standard message when ``cryptography`` is absent."""
    if not keys.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib(keys.MIN_CRYPTOGRAPHY), exception=keys.CRYPTOGRAPHY_IMPORT_ERROR)


def fail(module, error, **result):
    """Fail the task for a ModSignError: its message names the file and the cause, nothing secret."""
    result.setdefault("changed", False)
    if isinstance(error, ModSignError):
        module.fail_json(msg=str(error), path=error.path, **result)
    module.fail_json(msg=str(error), **result)
