"""ansible-lint rule skm-role-prefix: a role's variables start with skm_<role>_.

It stands in for ansible-lint's var-naming[no-role-prefix], which .ansible-lint skips because it accepts
only the bare "<role>_" prefix while this collection puts its namespace in front (skm_signing_key_*,
skm_enforce_*). Checked like the upstream rule: the role's defaults/ and vars/ files; in its tasks every
register and set_fact name, and the vars handed to one of our roles by include_role/import_role (with
that role's prefix). Names starting with "__" are private and exempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ansiblelint.rules import AnsibleLintRule
from ansiblelint.utils import parse_yaml_from_file

if TYPE_CHECKING:
    from ansiblelint.errors import MatchError
    from ansiblelint.file_utils import Lintable
    from ansiblelint.utils import Task


class SkmRolePrefixRule(AnsibleLintRule):
    """Role variables must start with skm_<role>_."""

    id = "skm-role-prefix"
    description = "Variables set in a role of skm.modsign must start with skm_<role>_ (namespace, then role)."
    severity = "MEDIUM"
    tags = ["idiom", "skm"]
    version_changed = "26.0.0"

    @staticmethod
    def _bad(name: object, role: str) -> bool:
        return isinstance(name, str) and not name.startswith("__") and not name.startswith(f"skm_{role}_")

    def _error(self, name: str, role: str, how: str, file: Lintable, line: int) -> MatchError:
        return self.create_matcherror(message=f"{how} {name!r} in role {role} does not start with skm_{role}_",
                                      filename=file, lineno=line)

    def matchtask(self, task: Task, file: Lintable | None = None) -> list[MatchError]:
        if not file or not file.role:
            return []
        role = file.role
        module = task["action"]["__ansible_module__"]
        errors = []
        if module.split(".")[-1] in ("include_role", "import_role"):
            # vars handed to one of our roles carry that role's prefix (like the upstream rule); vars of
            # other tasks (a template's inputs, say) are local to the task and free.
            included = str(task["action"].get("name", ""))
            if "." not in included or included.startswith("skm.modsign."):
                target = included.rsplit(".", maxsplit=1)[-1].rsplit("/", maxsplit=1)[-1]
                errors += [self._error(key, target, "vars:", file, task.line)
                           for key in task.get("vars", None) or {} if self._bad(key, target)]
        names = []
        if module in ("set_fact", "ansible.builtin.set_fact"):
            names += [("set_fact:", key) for key in task["action"] if key != "cacheable"]
        registered = task.get("register", None)
        if registered:
            names.append(("register:", registered))
        return errors + [self._error(name, role, how, file, task.line) for how, name in names if self._bad(name, role)]

    def matchyaml(self, file: Lintable) -> list[MatchError]:
        if str(file.kind) != "vars" or not file.role or not file.data:
            return []
        data = parse_yaml_from_file(str(file.path))
        if not isinstance(data, dict):
            return []
        lines = file.content.splitlines()
        errors = []
        for name in data:
            if self._bad(name, file.role):
                line = next((n for n, text in enumerate(lines, 1) if text.startswith(f"{name}:")), 1)
                errors.append(self._error(name, file.role, "variable", file, line))
        return errors
