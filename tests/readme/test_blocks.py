"""The README runner's rules (tests/readme/blocks.py) on small documents."""

import tempfile
import unittest
from pathlib import Path

from blocks import ELLIPSIS, ReadmeError, after_of, last_json, mismatches, parse_shown, steps_of
from run_readme import chain_of

FENCE = "```"


def doc(*parts: str) -> str:
    return "\n".join(parts) + "\n"


class Steps(unittest.TestCase):
    def test_bash_blocks_are_cut_after_each_shown_response(self):
        steps, skipped = steps_of(doc(
            "# Title", FENCE + "bash", "A=1", "curl -s x", '# => {"a": 1,', '#     "b": [1, ...]}',
            "curl -s y", "# => 409 {\"detail\": \"...\"}", "echo done", FENCE,
        ), "t.md")
        self.assertEqual(skipped, [])
        self.assertEqual([s.code for s in steps], ["A=1\ncurl -s x\n", "curl -s y\n", "echo done\n"])
        self.assertEqual(steps[0].expected, {"a": 1, "b": [1, ELLIPSIS]})
        self.assertEqual((steps[1].status, steps[1].expected), (409, {"detail": "..."}))
        self.assertEqual([s.line for s in steps], [3, 7, 9])
        self.assertFalse(steps[2].has_expected)

    def test_a_json_block_right_after_is_the_last_steps_response(self):
        steps, _ = steps_of(doc(FENCE + "bash", "curl x", FENCE, "", FENCE + "json", '{"ok": true}', FENCE), "t.md")
        self.assertEqual(steps[0].expected, {"ok": True})
        steps, _ = steps_of(doc(FENCE + "bash", "curl x", FENCE, "Prose.", FENCE + "json", "{}", FENCE), "t.md")
        self.assertFalse(steps[0].has_expected)

    def test_directives(self):
        steps, skipped = steps_of(doc(
            "<!-- readme: skip (starts a server) -->", FENCE + "bash", "scripts/run", FENCE,
            "<!-- readme: status 404 -->", "", FENCE + "bash", "curl x", FENCE, FENCE + "python", "print(1)", FENCE,
        ), "t.md")
        self.assertEqual(skipped, ["t.md:2: skipped (starts a server)"])
        self.assertEqual([(s.lang, s.status) for s in steps], [("bash", 404), ("python", None)])
        for bad in (
            doc("<!-- readme: skip -->", FENCE + "bash", "x", FENCE),
            doc("<!-- readme: skip () -->", FENCE + "bash", "x", FENCE),
            doc("<!-- readme: bogus -->", FENCE + "bash", "x", FENCE),
            doc("<!-- readme: skip (why) -->", "text", FENCE + "bash", "x", FENCE),
            doc(FENCE + "bash", "# => {}", FENCE),
            doc(FENCE + "bash", "x", "# => {not json}", FENCE),
        ):
            with self.assertRaises(ReadmeError, msg=bad):
                steps_of(bad, "t.md")


class After(unittest.TestCase):
    def test_a_document_names_the_one_it_continues(self):
        text = doc("# Page", "Set-up: the README's quickstart.", "", "<!-- readme: after ../README.md -->", "",
                   "Prose.", FENCE + "bash", "curl x", FENCE)
        self.assertEqual(after_of(text, "t.md"), "../README.md")
        steps, _ = steps_of(text, "t.md")
        self.assertEqual([s.code for s in steps], ["curl x\n"])
        self.assertIsNone(after_of(doc(FENCE + "bash", "x", FENCE), "t.md"))
        for bad in (
            doc("<!-- readme: after -->"),
            doc("<!-- readme: after a.md b.md -->"),
            doc("<!-- readme: after a.md -->", "<!-- readme: after b.md -->"),
        ):
            with self.assertRaises(ReadmeError, msg=bad):
                after_of(bad, "t.md")

    def test_the_chain_runs_the_continued_documents_first(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "docs").mkdir()
            (root / "README.md").write_text(doc(FENCE + "bash", "A=1", FENCE))
            (root / "docs" / "a.md").write_text(doc("<!-- readme: after ../README.md -->"))
            (root / "docs" / "b.md").write_text(doc("<!-- readme: after a.md -->"))
            chain = chain_of(root / "docs" / "b.md")
            self.assertEqual(chain, [(root / p).resolve() for p in ("README.md", "docs/a.md", "docs/b.md")])
            (root / "README.md").write_text(doc("<!-- readme: after docs/b.md -->"))
            with self.assertRaises(ReadmeError):
                chain_of(root / "docs" / "b.md")
            (root / "docs" / "a.md").write_text(doc("<!-- readme: after missing.md -->"))
            with self.assertRaises(ReadmeError):
                chain_of(root / "docs" / "a.md")


class Matching(unittest.TestCase):
    def check(self, shown: str, real: object) -> list:
        return mismatches(parse_shown(shown, "t"), real)

    def test_exact_values_and_keys(self):
        self.assertEqual(self.check('{"a": 1, "b": "x"}', {"a": 1, "b": "x"}), [])
        self.assertEqual(self.check('{"a": 1}', {"a": 1.0}), [])
        self.assertTrue(self.check('{"a": 1}', {"a": 2}))
        self.assertTrue(self.check('{"a": 1}', {"a": 1, "b": 2}))
        self.assertTrue(self.check('{"a": 1, "b": 2}', {"a": 1}))
        self.assertTrue(self.check('{"a": true}', {"a": 1}))
        self.assertTrue(self.check("[1, 2]", [1, 2, 3]))

    def test_ellipsis(self):
        self.assertEqual(self.check('{"a": 1, ...}', {"a": 1, "b": 2}), [])
        self.assertEqual(self.check('{"a": ..., "c": "..."}', {"a": [1], "c": None}), [])
        self.assertEqual(self.check("[1, ...]", [1, 2, 3]), [])
        self.assertEqual(self.check("[..., 3]", [1, 2, 3]), [])
        self.assertTrue(self.check("[1, ..., 3]", [1]))
        self.assertEqual(self.check('"sk-..."', "sk-abc"), [])
        self.assertEqual(self.check('"/api/jobs/.../calls"', "/api/jobs/1/calls"), [])
        self.assertTrue(self.check('"sk-..."', "pk-abc"))

    def test_volatile_values(self):
        self.assertEqual(self.check('{"id": "0193e0a2-0000-7000-8000-000000000000"}',
                                    {"id": "01a220d6-4ade-7510-b5ba-03aedbea3e92"}), [])
        self.assertEqual(self.check('{"created_at": "x", "latency_ms": 2}', {"created_at": "y", "latency_ms": 9}), [])
        self.assertEqual(self.check('{"t": "2026-11-28T10:00:00Z"}', {"t": "2027-01-01T00:00:00.5+00:00"}), [])
        self.assertTrue(self.check('{"delivered_at": null}', {"delivered_at": "2026-11-28T10:00:00Z"}))

    def test_last_json_value_printed(self):
        self.assertEqual(last_json('{"a": 1}{"b": 2}'), (True, {"b": 2}))
        self.assertEqual(last_json('noise\n{\n  "a": [1,\n 2]\n}\n'), (True, {"a": [1, 2]}))
        self.assertEqual(last_json("1499\n"), (True, 1499))
        self.assertEqual(last_json("Job 12 done\n"), (False, None))


if __name__ == "__main__":
    unittest.main()
