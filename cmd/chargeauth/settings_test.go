package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/chargeauth/chargeauth/node"
)

// readmeServeFlag is one row of the README's `chargeauth serve` table.
type readmeServeFlag struct{ variable, def string }

// readmeServeFlags parses the markdown table under "Command line" that
// lists serve's flags: | `--flag` | `CHARGEAUTH_...` | default | meaning |.
// The default is the cell's first `code` span, or "" for a cell that says
// "empty" or `""`.
func readmeServeFlags(t *testing.T) map[string]readmeServeFlag {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	_, section, ok := strings.Cut(text, "\n## Command line\n")
	if !ok {
		t.Fatal(`README has no "## Command line" section`)
	}
	_, table, ok := strings.Cut(section, "\n`chargeauth serve`:\n")
	if !ok {
		t.Fatal("README's Command line section has no `chargeauth serve`: table")
	}
	code := regexp.MustCompile("`([^`]*)`")
	out := map[string]readmeServeFlag{}
	for _, line := range strings.Split(strings.TrimLeft(table, "\n"), "\n") {
		if !strings.HasPrefix(line, "|") {
			break // the table ends at its first non-row
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 4 {
			t.Fatalf("README serve table row %q: want 4 cells", line)
		}
		name, ok := strings.CutPrefix(strings.TrimSpace(cells[0]), "`--")
		if !ok {
			continue // the header and the |---| line
		}
		name = strings.TrimSuffix(name, "`")
		variable := code.FindStringSubmatch(cells[1])
		if variable == nil {
			t.Errorf("README: --%s has no variable", name)
			continue
		}
		def := strings.TrimSpace(cells[2])
		switch m := code.FindStringSubmatch(def); {
		case strings.HasPrefix(def, "empty"):
			def = ""
		case m == nil:
			t.Errorf("README: --%s: default %q has no `value`", name, def)
		case m[1] == `""`:
			def = ""
		default:
			def = m[1]
		}
		if _, dup := out[name]; dup {
			t.Errorf("README lists --%s twice", name)
		}
		out[name] = readmeServeFlag{variable: variable[1], def: def}
	}
	if len(out) == 0 {
		t.Fatal("README's serve table has no rows")
	}
	return out
}

// The README's serve table, `serve -h` and node.Config agree: every
// setting of node.Config is a flag of serve, in the table with its
// variable and its default, and in the help with the same; the table has
// no flag the config lacks.
func TestServeSettingsMatchReadmeAndHelp(t *testing.T) {
	cfg := node.Defaults()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.Bind(fs)
	readme := readmeServeFlags(t)

	fs.VisitAll(func(f *flag.Flag) {
		t.Setenv(prefixEnv(envPrefix)(f.Name), "") // unset: the defaults show in the help
	})
	code, help, _ := runCmd(t, "serve", "-h")
	if code != 0 {
		t.Fatalf("serve -h: exit %d", code)
	}
	inHelp := map[string][2]string{} // flag: default, variable
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z-]+) \(default (.*), \$([A-Z_]+)\)$`).FindAllStringSubmatch(help, -1) {
		inHelp[m[1]] = [2]string{m[2], m[3]}
	}

	fs.VisitAll(func(f *flag.Flag) {
		variable := prefixEnv(envPrefix)(f.Name)
		r, ok := readme[f.Name]
		switch {
		case !ok:
			t.Errorf("--%s (node.Config) is not in the README's serve table", f.Name)
		case r.variable != variable:
			t.Errorf("--%s: README says variable %s, serve reads %s", f.Name, r.variable, variable)
		case !sameDefault(t, f, r.def):
			t.Errorf("--%s: README says default %q, node.Config's is %q", f.Name, r.def, f.DefValue)
		}
		wantHelp := f.DefValue
		if wantHelp == "" {
			wantHelp = `""`
		}
		switch h, ok := inHelp[f.Name]; {
		case !ok:
			t.Errorf("serve -h lacks --%s", f.Name)
		case h[0] != wantHelp || h[1] != variable:
			t.Errorf("serve -h: --%s (default %s, $%s), want (default %s, $%s)", f.Name, h[0], h[1], wantHelp, variable)
		}
	})
	for name := range readme {
		if fs.Lookup(name) == nil {
			t.Errorf("the README lists --%s, which node.Config does not have", name)
		}
	}
	for name := range inHelp {
		if fs.Lookup(name) == nil {
			t.Errorf("serve -h lists --%s, which node.Config does not have", name)
		}
	}
}

// sameDefault reports whether the README's default def is f's default,
// read as the flag reads a value (72h and 72h0m0s are one default).
func sameDefault(t *testing.T, f *flag.Flag, def string) bool {
	t.Helper()
	if def == "" || f.DefValue == "" {
		return def == f.DefValue
	}
	var scratch node.Config
	fs := flag.NewFlagSet("scratch", flag.ContinueOnError)
	scratch.Bind(fs)
	if err := fs.Set(f.Name, def); err != nil {
		t.Errorf("--%s: the README's default %q is not a valid value: %v", f.Name, def, err)
		return false
	}
	return fs.Lookup(f.Name).Value.String() == f.DefValue
}
