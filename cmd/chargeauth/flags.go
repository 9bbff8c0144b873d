package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

const envPrefix = "CHARGEAUTH"

// helpShown is returned when -h or --help was asked for: run prints text
// on stdout and exits 0.
type helpShown struct{ text string }

func (h *helpShown) Error() string { return "help shown" }

// envFunc names the variable a flag is also read from ("" for none).
type envFunc func(flagName string) string

// prefixEnv reads every flag from <prefix>_<FLAG_IN_CAPS>.
func prefixEnv(prefix string) envFunc {
	return func(name string) string {
		return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	}
}

// onlyEnv reads the flags listed, each from its variable, and no other.
func onlyEnv(vars map[string]string) envFunc {
	return func(name string) string { return vars[name] }
}

// parseFlags parses serve's flags: each also reads CHARGEAUTH_<FLAG>.
func parseFlags(fs *flag.FlagSet, args []string, _ io.Writer, shortUsage string) error {
	return parseFlagsEnv(fs, args, shortUsage, prefixEnv(envPrefix))
}

// parseFlagsEnv parses args into fs, then, for each flag not given on the
// command line, the variable env names for it. -h or --help returns a
// *helpShown. A bad flag, value or variable is an errUsage of one line that
// names it and says how to get help; fs itself prints nothing.
func parseFlagsEnv(fs *flag.FlagSet, args []string, shortUsage string, env envFunc) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	seeHelp := fmt.Sprintf("(see 'chargeauth %s -h')", fs.Name())
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &helpShown{helpText(fs, shortUsage, env)}
		}
		return usageError("%s %s", flagError(fs, err), seeHelp)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := env(f.Name)
		if given[f.Name] || name == "" {
			return
		}
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("$%s=%q: invalid value for --%s: %s %s", name, v, f.Name, valueProblem(f, err), seeHelp))
		}
	})
	if len(errs) > 0 {
		return &wrappedUsage{errors.Join(errs...)}
	}
	if fs.NArg() > 0 && !strings.HasPrefix(fs.Name(), "sessions") {
		return usageError("unexpected argument %q %s", fs.Arg(0), seeHelp)
	}
	return nil
}

// flagError rewrites the flag package's error in the form the help uses
// (--name, not -name), with what the value should look like.
func flagError(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + name + " needs a value"
	}
	// invalid value "x" for flag -name: why / invalid boolean value "x" for -name: why
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		if f := fs.Lookup(m[2]); f != nil {
			return fmt.Sprintf("invalid value %s for --%s: %s", m[1], m[2], valueProblem(f, errors.New(m[3])))
		}
	}
	return msg
}

var invalidValue = regexp.MustCompile(`^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-([^:]+): (.*)$`)

// valueProblem says what is wrong with a value f refused: the flag
// package's own errors for numbers and durations say only "parse error".
func valueProblem(f *flag.Flag, err error) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return err.Error()
	}
	switch g.Get().(type) {
	case time.Duration:
		return "not a duration (e.g. 10s, 1m30s, 250ms)"
	case bool:
		return "not true or false"
	case int, int64, uint, uint64:
		return "not a whole number"
	case float64:
		return "not a number"
	}
	return err.Error()
}

// helpText lists every flag with its default and its variable.
func helpText(fs *flag.FlagSet, shortUsage string, env envFunc) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\nFlags", shortUsage)
	anyEnv := false
	fs.VisitAll(func(f *flag.Flag) { anyEnv = anyEnv || env(f.Name) != "" })
	if anyEnv {
		b.WriteString(" (with the variable each is also read from)")
	}
	b.WriteString(":\n")
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		if v := env(f.Name); v != "" {
			fmt.Fprintf(&b, "  --%s (default %s, $%s)\n      %s\n", f.Name, def, v, f.Usage)
		} else {
			fmt.Fprintf(&b, "  --%s (default %s)\n      %s\n", f.Name, def, f.Usage)
		}
	})
	b.WriteString("  -h, --help\n      print this help\n")
	return b.String()
}
