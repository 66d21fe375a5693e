# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """What the attributes every skm.modsign module declares mean.

    A module lists each attribute with its own C(support) and, where it says more, C(details); the shared
    C(description) comes from here (extends_documentation_fragment: skm.modsign.attributes).
    """

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it predicts without changing the target.
  diff_mode:
    description: Returns what changed (in check mode - what would change) when run with C(--diff).
  idempotent:
    description:
      - When run twice in a row with the same arguments on an unchanged target, the second run reports
        C(changed=false) and changes nothing.
"""

    # skm.modsign.attributes.action: for a module with an action plugin of the same name.
    ACTION = r"""
options: {}
attributes:
  action:
    description: An action plugin of the same name runs on the controller before (or instead of) the module.
"""
