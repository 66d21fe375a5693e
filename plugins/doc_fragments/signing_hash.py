# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The O(hash) option of the modules that sign, make keys for or check module signatures.

    The module gives the option's C(description) (and C(default), if any); the type and the hashes the kernel's
    C(CONFIG_MODULE_SIG_HASH) can name come from here (extends_documentation_fragment: skm.modsign.signing_hash).
    """

    DOCUMENTATION = r"""
options:
  hash:
    type: str
    choices: [sha256, sha384, sha512, sha3-256, sha3-384, sha3-512]
"""
