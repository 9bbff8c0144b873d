package main

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Set at build time to override what the binary reads of itself, e.g.
//
//	go build -ldflags "-X main.buildVersion=v1.2.0 -X main.buildTime=$(date -u +%FT%TZ)" ./cmd/chargeauth
var buildVersion, buildTime string

// pseudoVersion matches the tail Go gives a version built from a commit
// without a tag (v0.0.0-20261205090000-b3d3ddb1c2f3, +dirty): the
// revision it ends with is printed on its own line.
var pseudoVersion = regexp.MustCompile(`^(v[0-9]+\.[0-9]+\.[0-9]+)(?:-(?:0\.)?[0-9]{14}-[0-9a-f]{12}|-[0-9A-Za-z.-]+\.0\.[0-9]{14}-[0-9a-f]{12})(\+dirty)?$`)

type buildFacts struct {
	version, revision, commitTime, built, goVersion string
	modified                                        bool
}

// readBuildFacts reads what debug.ReadBuildInfo returned.
func readBuildFacts(info *debug.BuildInfo, ok bool) buildFacts {
	b := buildFacts{version: "(devel)", revision: "unknown", goVersion: runtime.Version()}
	if ok {
		if info.GoVersion != "" {
			b.goVersion = info.GoVersion
		}
		if v := info.Main.Version; v != "" {
			b.version = v
		}
		if m := pseudoVersion.FindStringSubmatch(b.version); m != nil {
			b.version = m[1] + "-devel"
		}
		b.version = strings.TrimSuffix(b.version, "+dirty")
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.revision = s.Value
			case "vcs.time":
				b.commitTime = s.Value
			case "vcs.modified":
				b.modified = s.Value == "true"
			}
		}
	}
	if buildVersion != "" {
		b.version = buildVersion
	}
	b.built = buildTime
	if b.built == "" {
		// Without -ldflags, the binary's own modification time: when go
		// build (or go run, go test) wrote it.
		b.built = "unknown"
		if exe, err := os.Executable(); err == nil {
			if st, err := os.Stat(exe); err == nil {
				b.built = st.ModTime().UTC().Format(time.RFC3339)
			}
		}
	}
	return b
}

// versionText is what chargeauth version prints: each fact once.
func versionText(b buildFacts) string {
	rev := b.revision
	var notes []string
	if b.commitTime != "" {
		notes = append(notes, "committed "+b.commitTime)
	}
	if b.modified {
		notes = append(notes, "with uncommitted changes")
	}
	if len(notes) > 0 {
		rev += " (" + strings.Join(notes, ", ") + ")"
	}
	return fmt.Sprintf("chargeauth %s\nrevision: %s\nbuilt:    %s\ngo:       %s %s/%s\n",
		b.version, rev, b.built, b.goVersion, runtime.GOOS, runtime.GOARCH)
}
