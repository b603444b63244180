#!/usr/bin/env python3
"""Run the command examples of README.md and docs/cli.md and compare them with what the docs show.

Usage: check_examples.py --source DIR --capc PATH --cap PATH [--work DIR] [--keep] [DOC...]

The examples are read from the docs when the test runs, so they are checked as the docs are
edited. An example is a fenced block:

- in docs/cli.md (and any doc): a block whose first line starts with `$ `. Each `$ CMD` line
  is a command (run with bash -o pipefail; a trailing backslash continues it on the next
  line); the lines up to the next `$ ` line are its expected output (stdout and stderr
  together, as a terminal shows them). A line `...` in the expected output stands for any
  number of lines.
- in README.md: a ```sh block; each line is a command (a trailing `# comment` is a note, not
  output), which must exit 0. Their output is not compared.

Blocks that are neither (a usage synopsis: no `$ `) are not examples.

An HTML comment right before a block (blank lines between are allowed) changes how it is run:

    <!-- example: not run (REASON) -->      skipped, REASON printed (a GPU, mpirun, PyTorch,
                                            minutes of training, a download, a rebuild)
    <!-- example: needs NVRTC -->           run only when capc can compile CUDA (NVRTC loads),
                                            else skipped
    <!-- example: exit N -->                the last command exits with N (default: 1 when its
                                            expected output has an `error:` line, else 0)
    <!-- example: varies: scores, captions, losses -->   mask what depends on how long (on how
                                            fast a machine) training ran
    <!-- example: replace 'A' 'B' (REASON) -->  run the commands with A replaced by B (fewer
                                            training steps, the cpu target), said in the report

Several directives can share a comment, separated by `;`. A block with no marker must run and
match: an example that cannot run in the suite needs a `not run` marker with its reason.

Always masked, in the expected and the actual output alike: times (`0.361 ms`, `1.6s`, `in
0.7 s`), throughput (`samples/s`) and ETAs, thread counts (`on 2 threads`), the kernel cache's
counts (`N from the cache`, the `cache DIR: ...` line), and the scratch directory (the examples
run in a fresh scratch directory where `/tmp/` in a command stands for its own `tmp/`, so
parallel runs do not collide).

Fixtures: each doc's examples run in order in a scratch directory of its own that links the
source tree's `tests`, `models`, `scripts` and `docs` and has `capc`, `cap` (and `build/capc`,
`build/cap`) on the path. Before docs/cli.md's examples this script builds what they expect
to exist: the synthetic set `demo/` (1000 images, seed 1) and its vocabulary, the tiny
captioner compiled for it (`cap.so`, `-D vocab=38 -D lr=0.001`) and trained for a few steps
(`ckpt.safetensors`, `metrics.jsonl`), and the tiny captioner at its defaults (`tiny.so`);
all for the cpu target, with the suite's kernel cache ($CAPC_CACHE_DIR). Cold (an empty
cache) the whole run takes about 25 s on 2 cores, warm about 8 s.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

FENCE = re.compile(r'^(\s*)(```+|~~~+)(.*)$')
MARKER = re.compile(r'^\s*<!--\s*example:\s*(.*?)\s*-->\s*$')


class Example:
    def __init__(self, doc, line, kind, lines, directives):
        self.doc, self.line, self.kind, self.lines = doc, line, kind, lines
        self.directives = directives  # list of (name, arg)
        self.commands = []  # list of (command, expected lines or None)
        if kind == 'dollar':
            continued = False
            for text in lines:
                if continued:  # `$ cmd \` goes on on the next line
                    cmd, out = self.commands[-1]
                    self.commands[-1] = (cmd[:-1] + ' ' + text.strip(), out)
                elif text.startswith('$ '):
                    self.commands.append((text[2:], []))
                elif self.commands:
                    self.commands[-1][1].append(text)
                continued = bool(self.commands) and not self.commands[-1][1] and \
                    self.commands[-1][0].endswith('\\')
        else:
            for text in lines:
                cmd = strip_comment(text).strip()
                if cmd:
                    self.commands.append((cmd, None))

    def directive(self, name):
        for n, arg in self.directives:
            if n == name:
                return arg if arg is not None else ''
        return None

    def where(self):
        return '%s:%d' % (self.doc, self.line)


def strip_comment(line):
    """A shell line without its trailing `# comment` (a # outside quotes after a blank)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in '\'"':
            quote = c
        elif c == '#' and (i == 0 or line[i - 1] in ' \t'):
            return line[:i]
    return line


def parse_directives(text, where):
    parts, depth, cur = [], 0, ''
    for c in text:  # split on `;` outside parentheses (a reason may hold one)
        depth += (c == '(') - (c == ')')
        if c == ';' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += c
    parts.append(cur)
    out = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        m = re.match(r'^not run\s*\((.+)\)$', part)
        if m:
            out.append(('not run', m.group(1)))
            continue
        m = re.match(r'^exit\s+(\d+)$', part)
        if m:
            out.append(('exit', m.group(1)))
            continue
        m = re.match(r'^varies:\s*(.+)$', part)
        if m:
            kinds = [k.strip() for k in m.group(1).split(',')]
            for k in kinds:
                if k not in VARIES:
                    raise SystemExit('%s: unknown "varies" item %r (known: %s)'
                                     % (where, k, ', '.join(sorted(VARIES))))
            out.append(('varies', kinds))
            continue
        m = re.match(r"^replace\s+'([^']*)'\s+'([^']*)'(?:\s*\((.+)\))?$", part)
        if m:
            out.append(('replace', (m.group(1), m.group(2), m.group(3) or '')))
            continue
        if part.lower() == 'needs nvrtc':
            out.append(('needs nvrtc', None))
            continue
        raise SystemExit('%s: unknown example directive %r' % (where, part))
    return out


def read_examples(path, name):
    """The examples of one markdown file, in order."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    readme = os.path.basename(path) == 'README.md'
    examples = []
    pending = None  # (directives, line number) of the last marker not yet used
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            pending = (parse_directives(m.group(1), '%s:%d' % (name, i + 1)), i + 1)
            i += 1
            continue
        f = FENCE.match(lines[i])
        if not f:
            if lines[i].strip() and pending:
                raise SystemExit('%s:%d: an example marker must come right before a fenced block'
                                 % (name, pending[1]))
            i += 1
            continue
        indent, fence, info = f.group(1), f.group(2), f.group(3).strip()
        start = i + 1
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        directives = pending[0] if pending else []
        pending = None
        is_dollar = bool(body) and body[0].startswith('$ ')
        is_sh = readme and info in ('sh', 'bash', 'shell', 'console')
        if is_dollar:
            examples.append(Example(name, start, 'dollar', body, directives))
        elif is_sh:
            examples.append(Example(name, start, 'sh', body, directives))
        elif directives:
            raise SystemExit('%s:%d: example marker before a block that is not an example'
                             % (name, start))
    return examples


# ---- masking ----------------------------------------------------------------------------------

def _mask_time(m):
    return (' ' if m.group(1) else '') + '<time>'


ALWAYS = [
    # the kernel cache line: directory and counts
    (re.compile(r'^(capc: cache) .*$'), r'\1 <cache dir and counts>'),
    (re.compile(r'\b\d+ from the cache\b'), '<n> from the cache'),
    (re.compile(r'\bon \d+ threads\b'), 'on <n> threads'),
    (re.compile(r'\b\d+(?:\.\d+)? samples/s\b'), '<n> samples/s'),
    (re.compile(r'\bETA \d+:\d\d:\d\d\b'), 'ETA <time>'),
    # a time: 0.361 ms, 1.6s, 0.7 s, 264.6 s (after any run of blanks that aligns it)
    (re.compile(r'( *)\b\d+(?:\.\d+)? ?(?:ms|s)\b(?!/)'), _mask_time),
]

VARIES = {
    # BLEU-1..4 and CIDEr-D values (cap eval, cap score)
    'scores': [(re.compile(r'^(BLEU-[1-4]|CIDEr-D): \S+$'), r'\1: <score>')],
    # FILE: caption (cap sample)
    'captions': [(re.compile(r'^(\S+\.(?:jpe?g|png)): .*$'), r'\1: <caption>')],
    # loss and grad_norm values of progress lines
    'losses': [(re.compile(r'\b(loss|grad_norm|val_loss|val_bleu4|val_cider) (?:[-+0-9.eE]+|nan|inf|null)\b'),
                r'\1 <value>')],
}


def mask(lines, varies):
    rules = list(ALWAYS)
    for k in varies:
        rules += VARIES[k]
    out = []
    for line in lines:
        line = line.rstrip()
        for rx, repl in rules:
            line = rx.sub(repl, line)
        out.append(line)
    return out


def match(expected, actual):
    """expected may hold `...` lines (any number of lines). Returns (ok, first bad index)."""
    memo = {}

    def go(i, j):
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(expected):
            r = j == len(actual)
        elif expected[i] == '...':
            r = any(go(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            r = j < len(actual) and expected[i] == actual[j] and go(i + 1, j + 1)
        memo[key] = r
        return r

    return go(0, 0)


def diff(expected, actual):
    import difflib
    return '\n'.join(difflib.unified_diff(expected, actual, 'doc', 'actual', lineterm=''))


# ---- running ----------------------------------------------------------------------------------

def run(cmd, cwd, env, timeout=300):
    p = subprocess.run(['bash', '-o', 'pipefail', '-c', cmd], cwd=cwd, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode('utf-8', 'replace')


def fixture(scratch, env):
    steps = [
        'cap data synth --out demo --images 1000 --seed 1',
        'cap vocab --data coco:demo/captions.json --min-count 2 -o demo/vocab.txt',
        'capc models/captioner_tiny.json -D vocab=38 -D lr=0.001 --target=cpu -o cap.so',
        'cap train cap.so --data coco:demo/captions.json --vocab demo/vocab.txt --steps 10 '
        '--seed 1 --out ckpt.safetensors --log metrics.jsonl --print-every 0 --backend cpu',
        'capc models/captioner_tiny.json --target=cpu -o tiny.so',
    ]
    for cmd in steps:
        t = time.time()
        rc, out = run(cmd, scratch, env)
        print('fixture: %s (%.1f s)' % (cmd, time.time() - t))
        if rc != 0:
            print(out)
            raise SystemExit('fixture failed (exit %d): %s' % (rc, cmd))


def nvrtc_available(top, env, source):
    """Whether capc can compile CUDA here: --target=cuda is an error without NVRTC. (The same
    units as docs/cli.md's `-v -o x.so` example, so this fills the cache for it.)"""
    model = os.path.join(source, 'tests/passes/data/small_model.json')
    rc, _ = run("capc --target=cuda '%s' -o nvrtc-probe.so" % model, top, env)
    return rc == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--source', required=True)
    ap.add_argument('--capc', required=True)
    ap.add_argument('--cap', required=True)
    ap.add_argument('--work', help='scratch directory (default: a new temporary one)')
    ap.add_argument('--keep', action='store_true', help='keep the scratch directory')
    ap.add_argument('docs', nargs='*', default=['README.md', 'docs/cli.md'])
    args = ap.parse_args()

    source = os.path.abspath(args.source)
    examples = []
    for d in args.docs:
        examples += read_examples(os.path.join(source, d), d)

    top = tempfile.mkdtemp(prefix='capc-doc-examples.', dir=args.work)
    t0 = time.time()
    try:
        bindir = os.path.join(top, 'bin')
        os.mkdir(bindir)
        os.symlink(os.path.abspath(args.capc), os.path.join(bindir, 'capc'))
        os.symlink(os.path.abspath(args.cap), os.path.join(bindir, 'cap'))
        env = dict(os.environ)
        env['PATH'] = bindir + os.pathsep + env.get('PATH', '')
        env['LC_ALL'] = 'C'
        env.setdefault('OMP_NUM_THREADS', '2')

        scratches = {}
        for d in args.docs:
            scratch = os.path.join(top, re.sub(r'[^A-Za-z0-9]+', '_', d))
            os.mkdir(scratch)
            for name in ('tests', 'models', 'scripts', 'docs'):
                os.symlink(os.path.join(source, name), os.path.join(scratch, name))
            os.symlink(bindir, os.path.join(scratch, 'build'))
            os.mkdir(os.path.join(scratch, 'tmp'))
            scratches[d] = scratch

        has_nvrtc = nvrtc_available(top, env, source)
        runnable = [e for e in examples if e.directive('not run') is None
                    and (has_nvrtc or e.directive('needs nvrtc') is None)]
        for d in args.docs:
            if d.endswith('cli.md') and any(e.doc == d and e.kind == 'dollar' for e in runnable):
                fixture(scratches[d], env)

        ran, skipped, failed = 0, [], []
        for e in examples:
            reason = e.directive('not run')
            if reason is None and e.directive('needs nvrtc') is not None and not has_nvrtc:
                reason = 'needs NVRTC, which capc cannot load here'
            if reason is not None:
                skipped.append((e, reason))
                print('SKIP %s: %s (%s)' % (e.where(), e.commands[0][0] if e.commands else '', reason))
                continue
            scratch = scratches[e.doc]
            varies, replaces = [], []
            for n, arg in e.directives:
                if n == 'varies':
                    varies += arg
                elif n == 'replace':
                    replaces.append(arg)
                    print('     %s: runs with %r for %r (%s)' % (e.where(), arg[1], arg[0], arg[2]))
            ok = True
            for k, (cmd, expected) in enumerate(e.commands):
                real = cmd.replace('/tmp/', scratch + '/tmp/')
                for a, b, _ in replaces:
                    real = real.replace(a, b)
                t = time.time()
                try:
                    rc, out = run(real, scratch, env)
                except subprocess.TimeoutExpired:
                    rc, out = 'timeout', ''
                out = out.replace(scratch + '/tmp/', '/tmp/').replace(scratch + '/', '')
                actual_lines = out.split('\n')
                if actual_lines and actual_lines[-1] == '':
                    actual_lines.pop()
                last = k == len(e.commands) - 1
                want_rc = 0
                if expected is not None and any('error:' in x for x in expected):
                    want_rc = 1
                if last and e.directive('exit') is not None:
                    want_rc = int(e.directive('exit'))
                problems = []
                if rc != want_rc:
                    problems.append('exit status %s, the doc implies %d' % (rc, want_rc))
                if expected is not None:
                    exp_m, act_m = mask(expected, varies), mask(actual_lines, varies)
                    if not match(exp_m, act_m):
                        problems.append('output differs (masked):\n' + diff(exp_m, act_m))
                if problems:
                    ok = False
                    print('FAIL %s: $ %s (%.1f s)' % (e.where(), cmd, time.time() - t))
                    for p in problems:
                        print('  ' + p.replace('\n', '\n  '))
                    if expected is None or rc == 'timeout':
                        print('  output:\n    ' + '\n    '.join(actual_lines[-20:]))
                    break
                print('ok   %s: $ %s (%.1f s)' % (e.where(), cmd, time.time() - t))
            ran += 1
            if not ok:
                failed.append(e)

        print()
        print('%d examples: %d ran (%d passed, %d failed), %d skipped; %.1f s'
              % (len(examples), ran, ran - len(failed), len(failed), len(skipped), time.time() - t0))
        for e, reason in skipped:
            print('  skipped %s: %s' % (e.where(), reason))
        for e in failed:
            print('  FAILED %s' % e.where())
        return 1 if failed else 0
    finally:
        if args.keep:
            print('scratch directory kept: ' + top)
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
