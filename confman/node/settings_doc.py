"""``docs/config.md`` and the sample config, generated from the settings table.

Regenerate with ``.venv/bin/python -m confman.node.settings_doc --markdown > docs/config.md``;
``tests/node/test_settings_doc.py`` fails while the file differs.
"""

from __future__ import annotations

import sys

import tomli_w

from confman.node.settings import SECTIONS, SETTINGS
from confman.node.settings_nested import NESTED
from confman.node.settings_types import HAND, REQUIRED, Setting


def _toml_value(value: object) -> str:
    """One value as TOML writes it (arrays on one line)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    return tomli_w.dumps({"v": value}).partition(" = ")[2].strip()


def _default_doc(s: Setting) -> str:
    if s.default_doc:
        return s.default_doc
    if s.default is REQUIRED:
        return "required"
    return f"`{_toml_value(s.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _sample_line(key: str, value: object, doc: str) -> str:
    line = f"{key} = {_toml_value(value)}"
    return f"{line:<39} # {doc}" if doc else line


def sample_config() -> str:
    """A complete config file for one node of three: every setting at its default (or an
    example value), each with its doc line. It loads as it is."""
    lines: list[str] = []
    for section in ("", *SECTIONS):
        if section:
            lines.append(f"\n[{section}]")
        for s in SETTINGS:
            if s.section != section or s.kind is HAND:
                continue
            if s.derive is not None:  # its default depends on other settings: shown, not set
                doc = f"{s.doc} (default: {s.default_doc})"
                lines.append("# " + _sample_line(s.name, s.example, doc))
                continue
            value = s.example if s.example is not None else s.default
            lines.append(_sample_line(s.name, value, s.doc))
        if section == "":
            lines.append(
                _sample_line(
                    "cluster_secret",
                    "change-me-to-32-random-characters",
                    'or cluster_secret_file = "/etc/confman/secret"',
                )
            )
        if section in ("http", "raft"):
            lines.append(f"\n# [{section}.tls]")
            lines += [
                f"# {_sample_line(k.name, k.example, k.doc)}" for k in NESTED[f"{section}.tls"]
            ]
    for i, (rp, hp) in enumerate(((7100, 6100), (7200, 6200), (7300, 6300)), start=1):
        lines.append("\n[[members]]")
        lines.append(_sample_line("id", f"node{i}", ""))
        lines.append(_sample_line("raft", f"127.0.0.1:{rp}", ""))
        lines.append(_sample_line("http", f"http://127.0.0.1:{hp}/", ""))
    lines.append("\n[[api_keys]]")
    for k in NESTED["api_keys"]:
        if k.example is not None:
            lines.append(_sample_line(k.name, k.example, k.doc))
    return "\n".join(lines).lstrip("\n") + "\n"


def render_markdown() -> str:
    """``docs/config.md``."""
    out = [
        "# Node configuration",
        "",
        "<!-- Generated from confman/node/settings.py by"
        " `.venv/bin/python -m confman.node.settings_doc --markdown > docs/config.md`;"
        " tests/node/test_settings_doc.py checks it. -->",
        "",
        "Each node reads one TOML file (`confman serve --config node.toml`). Environment",
        "variables win over the file, and `--node-id`/`--data-dir` over both; `CONFMAN_PROFILE`",
        "may only make the profile stricter. Every mistake is reported at start-up naming the",
        "field (`http.max_body_bytes: must be > 0`); an unknown setting is a mistake too.",
        "",
    ]
    for section in ("", *SECTIONS):
        out += [f"## {f'[{section}]' if section else 'Top level'}", ""]
        out += [
            "| Setting | Type | Default | Bounds | Env | Description |",
            "|---|---|---|---|---|---|",
        ]
        for s in SETTINGS:
            if s.section != section:
                continue
            kind = "table" if s.kind is HAND else s.kind.name
            if s.key in ("members", "api_keys"):
                kind = "array of tables"
            if s.key == "cluster_secret":
                kind = "string"
            default = "-" if s.kind is HAND and s.default is not REQUIRED else _default_doc(s)
            if s.key == "cluster_secret":
                default = "required (or cluster_secret_file)"
            bounds = "; ".join(b.doc for b in s.bounds) or "-"
            env = f"`{s.env}`" if s.env else "-"
            out.append(
                f"| `{s.key}` | {_cell(kind)} | {_cell(default)} | {_cell(bounds)} | {env} | "
                f"{_cell(s.doc)} |"
            )
        for k in NESTED.get(section, ()):
            key = f"{section}.{k.name}" if section else k.name
            out.append(
                f"| `{key}` | {_cell(k.type)} | {_cell(k.default)} | - | - | {_cell(k.doc)} |"
            )
        out.append("")
    for name, header in (
        ("http.tls", "[http.tls]"),
        ("raft.tls", "[raft.tls]"),
        ("members", "[[members]]"),
        ("api_keys", "[[api_keys]]"),
    ):
        out += [f"## {header}", "", "| Key | Type | Default | Description |", "|---|---|---|---|"]
        for k in NESTED[name]:
            out.append(f"| `{k.name}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.doc)} |")
        out.append("")
    out += ["## Sample", "", "```toml", sample_config().rstrip("\n"), "```", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if argv != ["--markdown"]:
        print(
            "usage: python -m confman.node.settings_doc --markdown > docs/config.md",
            file=sys.stderr,
        )
        return 2
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
