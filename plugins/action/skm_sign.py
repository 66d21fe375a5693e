# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for skm.modsign.skm_sign: controller mode, where the private key never leaves the controller.

With ``key_location: host`` (the default) the task goes to the module unchanged.
With ``key_location: controller`` the key is loaded here once (from a file on
the controller or a vaulted variable) and the module is called twice on the
host: ``survey`` returns a digest per module, ``write`` receives one raw
signature per module that changes. See plugins/module_utils/_sign_batch.py.

The host is not trusted with more than it must be: a survey entry whose path
the task's ``path`` does not name is refused (``_sign_batch.refuse_outside``),
and every signature made is appended to the signing log here before the host
receives it (``_signing_log``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.action import ActionBase

from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils import _sign_batch as batch
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._signing_log import SigningLog, default_location
from ansible_collections.skm.modsign.plugins.modules.skm_sign import ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE

MODULE = "skm.modsign.skm_sign"
HOST_ARGS = ("path", "hash", "signer_id", "workers", "verdict_cache")   # all the host ever receives in controller mode


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        if "controller_request" in self._task.args:
            raise AnsibleActionFail("controller_request is internal to skm_sign's controller mode; do not set it")
        if self._task.args.get("key_location", "host") != "controller":
            if self._task.args.get("key_content") or self._task.args.get("cert_content"):
                raise AnsibleActionFail("key_content and cert_content are only for key_location=controller "
                                        "(refusing to send a private key to the host)")
            result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
            return result
        _spec, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE,
                                                  required_one_of=[("key", "key_content")])
        try:
            signing_key = self._load_key(args)
        except ModSignError as exc:
            raise AnsibleActionFail(to_native(exc))
        result.update(self._sign(args, signing_key, task_vars))
        return result

    def _read_controller_file(self, name):
        try:
            path = self._find_needle("files", name)
            with open(path, "rb") as handle:
                return path, handle.read()
        except (AnsibleError, OSError) as exc:
            raise ModSignError("cannot read on the controller (%s)" % to_native(exc), name)

    def _load_key(self, args):
        if not keys.HAS_CRYPTOGRAPHY:
            raise ModSignError("controller mode needs the Python library %s on the controller" % keys.MIN_CRYPTOGRAPHY)
        if args["key_content"]:
            key_name, key_data = "key_content", to_bytes(args["key_content"])
        else:
            key_name, key_data = self._read_controller_file(args["key"])
        cert_name, cert_data = None, None
        if args["cert_content"]:
            cert_name, cert_data = "cert_content", to_bytes(args["cert_content"])
        elif args["cert"]:
            cert_name, cert_data = self._read_controller_file(args["cert"])
        return batch.signing_key_from_bytes(key_data, cert_data, args["passphrase"], args["hash"],
                                            args["signer_id"] == "skid", key_name, cert_name)

    def _host_step(self, args, task_vars, request):
        module_args = dict((name, args[name]) for name in HOST_ARGS)
        module_args["controller_request"] = request
        module_args["key_location"] = "controller"
        out = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        if out.get("failed"):
            raise AnsibleActionFail(out.get("msg", "skm_sign failed on the host"), result=out)
        return out

    def _open_log(self, args, task_vars):
        location = default_location(os.environ) if args["signing_log"] is None else args["signing_log"]
        if not location:
            return None
        try:
            return SigningLog(os.path.expanduser(location), (task_vars or {}).get("inventory_hostname", "?"))
        except ModSignError as exc:
            raise AnsibleActionFail("%s; nothing was signed (signing_log='' turns the log off)" % to_native(exc))

    def _sign(self, args, signing_key, task_vars):
        certificate = batch.b64(signing_key.certificate.der)
        survey = self._host_step(args, task_vars, {"step": "survey", "certificate": certificate})
        entries = batch.refuse_outside(survey.get("entries") or [], args["path"])
        planned = batch.plan(entries, signing_key, args["replace_foreign"], args["replace_tampered"])
        wanted = [entry["d"] for _outcome, entry in planned if entry is not None]
        failures = {}
        if wanted and not self._task.check_mode:
            log = self._open_log(args, task_vars)
            try:
                signatures = batch.sign_digests(signing_key, wanted)
                if log is not None:
                    log.record(planned, signing_key)
            except ModSignError as exc:
                raise AnsibleActionFail("%s; no signature was sent to the host" % to_native(exc))
            finally:
                if log is not None:
                    log.close()
            requests = batch.write_requests(planned, signatures)
            failures = self._host_step(args, task_vars, {"step": "write", "certificate": certificate,
                                                         "entries": requests})["failures"]
        result = batch.summarize(batch.outcomes_after_write(planned, failures), self._task.check_mode)
        result["key_location"] = "controller"
        result["stale_temps_removed"] = survey.get("stale_temps_removed", 0)
        if "verdict_cache" in survey:
            result["verdict_cache"] = survey["verdict_cache"]
        if self._task.diff:
            result["diff"] = batch.diff(result, self._task.check_mode)
        message = batch.failure_message(result)
        if message:
            result.update(failed=True, msg=message)
        return result
