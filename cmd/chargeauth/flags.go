package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/peterbourgon/ff/v3"
)

const envPrefix = "CHARGEAUTH"

var errHelp = errors.New("help shown")

// parseFlags parses args and CHARGEAUTH_* variables into fs. A bad flag or
// value is an errUsage.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, shortUsage string) error {
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(fs, stderr, shortUsage) }
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix(envPrefix))
	switch {
	case errors.Is(err, flag.ErrHelp):
		return errHelp
	case err != nil:
		return usageError("%v", err)
	case fs.NArg() > 0 && !strings.HasPrefix(shortUsage, "chargeauth sessions"):
		return usageError("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// printUsage lists every flag with its default and its variable.
func printUsage(fs *flag.FlagSet, w io.Writer, shortUsage string) {
	fmt.Fprintf(w, "Usage: %s\n\nFlags (each also read from the variable shown):\n", shortUsage)
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		env := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		fmt.Fprintf(w, "  --%s (default %s, $%s)\n      %s\n", f.Name, def, env, f.Usage)
	})
}

// byteSize is a flag.Value for sizes such as 256MiB or 1GB.
type byteSize uint64

func (b *byteSize) String() string { return humanize.IBytes(uint64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("not a size (e.g. 256MiB): %q", s)
	}
	*b = byteSize(n)
	return nil
}

func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
