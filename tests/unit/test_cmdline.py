"""_cmdline: kernel command-line edits, GRUB shell assignments, BLS entries, the planner.

Oracles we did not write: bash (sourcing a shell assignment we edited), and the kernel's own
rules for parsing the command line (quotes group, dashes equal underscores, last one wins).
"""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, strategies as st

from ansible_collections.skm.modsign.plugins.module_utils import _cmdline as c
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

ARG = "module.sig_enforce=1"


@pytest.mark.parametrize("line, expected", [
    ("", ARG),
    ("ro quiet", f"ro quiet {ARG}"),
    ("ro quiet\n", f"ro quiet {ARG}\n"),
    ("ro module.sig_enforce=0 quiet", f"ro quiet {ARG}"),
    ("ro  \"acpi_osi=Windows 2020\"  quiet", f"ro  \"acpi_osi=Windows 2020\"  quiet {ARG}"),
    ("ro -- single", f"ro {ARG} -- single"),
])
def test_with_arg_appends_and_keeps_everything_else(line, expected):
    assert c.with_arg(line, ARG) == expected
    assert c.with_arg(expected, ARG) == expected          # idempotent


@pytest.mark.parametrize("line", ["ro module.sig-enforce=1", f"{ARG} ro", f"module.sig_enforce=0 ro {ARG}"])
def test_present_means_in_effect(line):
    assert c.has_arg(line, ARG) and c.with_arg(line, ARG) == line


def test_last_occurrence_wins_and_init_args_do_not_count():
    assert not c.has_arg(f"{ARG} module.sig_enforce=0", ARG)
    assert not c.has_arg(f"ro -- {ARG}", ARG)


def test_without_arg_removes_every_value_and_nothing_else():
    assert c.without_arg(f"{ARG} ro module.sig_enforce=0  quiet", ARG) == "ro  quiet"
    assert c.without_arg("ro quiet", ARG) == "ro quiet"


words = st.text(alphabet="abcdefxyz_.=-0123456789", min_size=1, max_size=12)


@given(st.lists(words, max_size=8), st.sampled_from([" ", "  ", "\t"]))
def test_edits_keep_other_arguments_in_order(args, sep):
    line = sep.join(args)
    added = c.with_arg(line, ARG)
    assert c.has_arg(added, ARG) and c.with_arg(added, ARG) == added
    others = [a for a in c.split_args(line) if c.arg_name(a) != "module.sig_enforce"]
    assert [a for a in c.split_args(added) if c.arg_name(a) != "module.sig_enforce"] == others
    assert c.split_args(c.without_arg(added, ARG)) == others


@pytest.mark.parametrize("bad", ["", "a b", "x=$(reboot)", "x=`id`", "--"])
def test_check_arg_refuses_what_is_not_one_argument(bad):
    with pytest.raises(ModSignError):
        c.check_arg(bad)


def _bash_value(text, name):
    return subprocess.run(["bash", "-c", f'{text}\nprintf %s "${name}"'], capture_output=True, text=True, check=True).stdout


def test_shell_assignment_edit_is_what_bash_sources():
    text = ('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet module.sig_enforce=1"\n'
            "export GRUB_CMDLINE_LINUX='console=ttyS0 module.sig_enforce=1'  # serial\n")
    new = c.remove_from_shell_assignments(text, ARG)
    assert _bash_value(new, "GRUB_CMDLINE_LINUX") == "console=ttyS0"
    assert _bash_value(new, "GRUB_CMDLINE_LINUX_DEFAULT") == "quiet"
    assert new.splitlines()[0] == "GRUB_DEFAULT=0" and new.endswith("# serial\n")


def test_grub_dropin_appends_when_sourced():
    text = 'GRUB_CMDLINE_LINUX="console=ttyS0"\n' + c.grub_dropin(ARG)
    assert _bash_value(text, "GRUB_CMDLINE_LINUX") == f"console=ttyS0 {ARG}"


def test_grub_cfg_entries_read_every_linux_line():
    cfg = ("menuentry 'Debian' {\n\tlinux\t/vmlinuz-6.1 root=UUID=x ro  quiet\n\tinitrd\t/initrd.img-6.1\n}\n"
           "submenu 'Advanced' {\n  menuentry 'rescue' {\n\t\tlinux /vmlinuz-6.1 root=UUID=x ro single\n  }\n}\n")
    assert c.grub_cfg_entries(cfg) == [("/vmlinuz-6.1", "root=UUID=x ro  quiet"), ("/vmlinuz-6.1", "root=UUID=x ro single")]


def test_bls_entry_several_options_lines():
    entry = "title x\noptions root=/dev/vda1 module.sig_enforce=0\noptions quiet\nlinux /vmlinuz\n"
    new = c.edit_bls_entry(entry, ARG, "present")
    assert new == f"title x\noptions root=/dev/vda1\noptions quiet {ARG}\nlinux /vmlinuz\n"
    assert c.has_arg(c.bls_options(new), ARG)
    assert c.edit_bls_entry("title x\nlinux /vmlinuz\n", ARG, "present") == f"title x\nlinux /vmlinuz\noptions {ARG}\n"


def test_kernelopts_from_grubenv():
    env = c.grubenv("# GRUB Environment Block\nkernelopts=root=/dev/vda2 ro\nsaved_entry=abc\n######\n")
    assert c.expand_kernelopts("$kernelopts quiet", env) == "root=/dev/vda2 ro quiet"


def _tree(tmp_path, files):
    for path, text in files.items():
        p = tmp_path / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


def test_plan_systemd_boot_present_only_when_every_entry_has_it(tmp_path):
    root = _tree(tmp_path, {
        "/boot/efi/loader/loader.conf": "timeout 3\n",
        "/boot/efi/loader/entries/a.conf": f"title a\noptions root=/dev/vda1 {ARG}\n",
        "/boot/efi/loader/entries/b.conf": "title b\noptions root=/dev/vda1\n",
        "/etc/kernel/cmdline": f"root=/dev/vda1 {ARG}\n",
    })
    plan = c.plan(root, ARG)
    assert plan.bootloader == "systemd_boot" and plan.command is None
    assert [ch.path for ch in plan.changes] == ["/boot/efi/loader/entries/b.conf"]


def test_plan_grub_absent_removes_dropin_and_user_settings(tmp_path):
    root = _tree(tmp_path, {
        "/usr/sbin/update-grub": "",
        "/etc/default/grub": f'GRUB_CMDLINE_LINUX="{ARG}"\n',
        f"/etc/default/grub.d/{c.DROPIN_NAME}": c.grub_dropin(ARG),
        "/boot/grub/grub.cfg": f"\tlinux /vmlinuz-6.1 root=x ro {ARG} {ARG}\n",
    })
    plan = c.plan(root, ARG, "absent")
    assert {(ch.path, ch.after) for ch in plan.changes} == {
        (f"/etc/default/grub.d/{c.DROPIN_NAME}", None), ("/etc/default/grub", 'GRUB_CMDLINE_LINUX=""\n')}
    assert plan.command == ["chroot", root, "update-grub"]


def test_plan_grubby_detected_and_command_only_when_needed(tmp_path):
    root = _tree(tmp_path, {
        "/usr/sbin/grubby": "",
        "/boot/grub2/grubenv": f"kernelopts=root=/dev/vda2 ro {ARG}\n",
        "/boot/loader/entries/x-6.5.conf": "title x\nversion 6.5\noptions $kernelopts\n",
        "/boot/loader/entries/x-6.6.conf": "title y\nversion 6.6\noptions root=/dev/vda2 ro\n",
    })
    plan = c.plan(root, ARG)
    assert plan.bootloader == "grubby"
    assert [e.satisfied for e in plan.entries] == [True, False]
    assert plan.command[-2:] == ["--update-kernel=ALL", f"--args={ARG}"]


def test_plan_kernel_install_never_starts_cmdline_from_the_argument_alone(tmp_path):
    root = _tree(tmp_path, {"/etc/kernel/install.conf": "layout=uki\n"})
    with pytest.raises(ModSignError, match="would drop root="):
        c.plan(root, ARG)


def test_plan_unrecognised(tmp_path):
    with pytest.raises(ModSignError, match="no bootloader recognised"):
        c.plan(str(tmp_path), ARG)


# --- issue 16: the argument grammar, the drop-in's quoting, removal that never cuts inside shell syntax --

@pytest.mark.parametrize("good", [ARG, "quiet", "rd.luks.uuid=luks-0f8e", 'acpi_osi="Windows 2020"',
                                  'x="1;echo PWNED >/tmp/pwned;"', "dyndbg=+p", "video=1024x768@60", "a=b=c"])
def test_check_arg_accepts_the_kernel_grammar(good):
    assert c.check_arg(good) == good


@pytest.mark.parametrize("bad", ['x="1', 'x="a"b"', '"x=1"', "x=1;reboot", "x=1 y", "x=a\nb", "x=$y", "x='1'",
                                 "x=1#", "-x", "x=\\1", 'x="$(id)"', "x=é"])
def test_check_arg_refuses_what_a_bootloader_would_interpret(bad):
    with pytest.raises(ModSignError, match="argument"):
        c.check_arg(bad)


@pytest.mark.parametrize("arg", [ARG, 'x="1;echo PWNED >/tmp/pwned;"', "a=x!y*z?[q]^~"])
def test_grub_dropin_sources_to_exactly_the_argument(arg, tmp_path):
    marker = tmp_path / "m"
    arg = arg.replace("/tmp/pwned", str(marker))
    assert _bash_value('GRUB_CMDLINE_LINUX="ro"\n' + c.grub_dropin(arg), "GRUB_CMDLINE_LINUX") == f"ro {arg}"
    assert not marker.exists()


@pytest.mark.parametrize("value", ['"$(echo module.sig_enforce=1)"', '`echo module.sig_enforce=1`',
                                   '"a $OTHER"', '"${GRUB_CMDLINE_LINUX:-x}"', '"unterminated', "~/x",
                                   '"${GRUB_CMDLINE_LINUX}module.sig_enforce=1"', '"$$"'])
def test_removal_refuses_values_it_cannot_evaluate(value):
    with pytest.raises(c.UnparsableShell, match="GRUB_CMDLINE_LINUX"):
        c.remove_from_shell_assignments(f"GRUB_CMDLINE_LINUX={value}\n", ARG)


@pytest.mark.parametrize("text", ["GRUB_CMDLINE_LINUX+=' module.sig_enforce=1'\n",
                                  'test -n "$X" && GRUB_CMDLINE_LINUX="module.sig_enforce=1"\n'])
def test_removal_refuses_forms_it_does_not_edit(text):
    with pytest.raises(c.UnparsableShell, match="form"):
        c.remove_from_shell_assignments(text, ARG)


@pytest.mark.parametrize("text, expected", [
    ('GRUB_CMDLINE_LINUX="module.sig_enforce=1"\n', 'GRUB_CMDLINE_LINUX=""\n'),
    ("GRUB_CMDLINE_LINUX=module.sig_enforce=1\n", "GRUB_CMDLINE_LINUX=\n"),
    ('GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX module.sig_enforce=1 quiet"\n', 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX quiet"\n'),
    ("GRUB_CMDLINE_LINUX='a \"b c\"'\" module.sig_enforce=1\"\n", "GRUB_CMDLINE_LINUX='a \"b c\"'\"\"\n"),
    ('GRUB_CMDLINE_LINUX="a\\"b c\\" module.sig_enforce=1"\n', 'GRUB_CMDLINE_LINUX="a\\"b c\\""\n'),
    ('#GRUB_CMDLINE_LINUX="$(x) module.sig_enforce=1"\nGRUB_X="$(y)"\n', None),
    ('GRUB_CMDLINE_LINUX="a\nmodule.sig_enforce=1 b"\n', 'GRUB_CMDLINE_LINUX="a\nb"\n'),
])
def test_removal_cuts_only_the_argument_and_sources_the_same(text, expected):
    new = c.remove_from_shell_assignments(text, ARG)
    assert new == (text if expected is None else expected)
    if "$(" not in text:
        before = c.split_args(_bash_value(text, "GRUB_CMDLINE_LINUX"))
        assert c.split_args(_bash_value(new, "GRUB_CMDLINE_LINUX")) == [a for a in before if c.arg_name(a) != c.arg_name(ARG)]


def test_removal_refuses_an_argument_split_across_quotes():
    with pytest.raises(c.UnparsableShell, match="split across shell quotes"):
        c.remove_from_shell_assignments("GRUB_CMDLINE_LINUX=module.sig_enforce='1'\n", ARG)


def test_plan_bls_without_grubby_never_picks_grub(tmp_path):
    root = _tree(tmp_path, {
        "/usr/sbin/grub2-mkconfig": "", "/etc/default/grub": 'GRUB_CMDLINE_LINUX=""\n',
        "/boot/loader/entries/a.conf": "title a\noptions root=/dev/vda2 ro\n",
        "/etc/kernel/cmdline": "root=/dev/vda2 ro\n",
    })
    plan = c.plan(root, ARG)
    assert plan.bootloader == "bls" and plan.command is None
    assert [ch.path for ch in plan.changes] == ["/boot/loader/entries/a.conf", "/etc/kernel/cmdline"]


def test_plan_empty_bls_directory_is_not_a_bls_host(tmp_path):
    root = _tree(tmp_path, {"/usr/sbin/update-grub": "", "/boot/grub/grub.cfg": "\tlinux /vmlinuz root=x ro\n"})
    (tmp_path / "boot/loader/entries").mkdir(parents=True)
    assert c.detect(root) == "grub"
    with pytest.raises(ModSignError, match="without entries"):
        c.plan(root, ARG, bootloader="bls")


class _Runner:
    """Enough of AnsibleModule for the module's pre-rename check: run_command through subprocess."""
    params = {"dropin_name": c.DROPIN_NAME}

    @staticmethod
    def run_command(argv, cwd=None, encoding="utf-8"):
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
        decode = (lambda b: b.decode(encoding)) if encoding else (lambda b: b)
        return proc.returncode, decode(proc.stdout), decode(proc.stderr)


@pytest.mark.parametrize("after, error", [
    ('GRUB_CMDLINE_LINUX="quiet"\n', None),
    ('GRUB_CMDLINE_LINUX="quiet module.sig_enforce=1"\n', "would source to"),    # not removed
    ('GRUB_CMDLINE_LINUX="\n', "would not parse as sh"),                         # cut inside quotes
    ('GRUB_CMDLINE_LINUX="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT="x"\n', "would source to"),
])
def test_module_checks_an_edited_grub_file_before_the_rename(after, error):
    from ansible_collections.skm.modsign.plugins.modules import skm_kernel_cmdline as module
    change = c.FileChange("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet module.sig_enforce=1"\n', after)
    if error is None:
        module._check_grub_shell(_Runner, change, "/r/etc/default/grub", ARG, "absent")
        return
    with pytest.raises(ModSignError, match=error) as caught:
        module._check_grub_shell(_Runner, change, "/r/etc/default/grub", ARG, "absent")
    assert caught.value.path == "/r/etc/default/grub"


def test_module_checks_our_dropin_sources_to_exactly_the_argument():
    from ansible_collections.skm.modsign.plugins.modules import skm_kernel_cmdline as module
    good = c.FileChange(f"/etc/default/grub.d/{c.DROPIN_NAME}", None, c.grub_dropin('x="a;b"'))
    module._check_grub_shell(_Runner, good, "/r/d", 'x="a;b"', "present")
    bad = good._replace(after='GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX x="a;b""\n')     # the old, unquoted form
    with pytest.raises(ModSignError, match="would source to"):
        module._check_grub_shell(_Runner, bad, "/r/d", 'x="a;b"', "present")
