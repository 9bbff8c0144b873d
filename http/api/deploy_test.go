package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/session"
)

// The files an operator deploys beside the service.
const (
	alertsFile     = "../../deploy/prometheus/alerts.yml"
	alertTestsFile = "../../deploy/prometheus/alerts_test.yml"
	dashboardFile  = "../../deploy/grafana/chargeauth.json"
)

// notYetServed are names the deploy files may use before this branch serves
// them, each with the change that adds it. Remove a name once it is served:
// the test then checks it like every other.
var notYetServed = map[string]string{}

var metricName = regexp.MustCompile(`chargeauth_[a-z0-9_]*[a-z0-9]`)

// Every chargeauth_* name in the alert rules and the dashboard is served by
// a real /metrics, so the files cannot drift from the code.
func TestDeployMetricNamesAreServed(t *testing.T) {
	svc := startServiceWithACL(t)
	recv := startReceiver(t)
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb") // so that every labelled family has a series
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if rec, err := svc.Store().Get(id); err != nil || rec.State != session.StateDelivered {
			return fmt.Errorf("not delivered yet: %v %v", rec.State, err)
		}
		return nil
	})
	fams := scrape(t, svc)
	served := func(name string) bool {
		if f := fams[name]; f != nil && len(f.GetMetric()) > 0 {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if f := fams[base]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
					return true
				}
			}
		}
		return false
	}
	for _, file := range []string{alertsFile, alertTestsFile, dashboardFile} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := metricName.FindAllString(string(b), -1)
		slices.Sort(names)
		names = slices.Compact(names)
		if len(names) < 5 {
			t.Fatalf("%s: only %d metric names found: %v", file, len(names), names)
		}
		for _, n := range names {
			if served(n) {
				continue
			}
			if why, ok := notYetServed[n]; ok {
				t.Logf("%s: %s is not served yet; it comes with %s", file, n, why)
				continue
			}
			t.Errorf("%s uses %s, which /metrics does not serve", file, n)
		}
	}
}

// startServiceWithACL runs the service with a real embedded-style
// authorization server, so that the ACL metrics are served too.
func startServiceWithACL(t *testing.T) *node.Node {
	t.Helper()
	path := filepath.Join(t.TempDir(), "acl.json")
	body := `{"entries":[{"driver_token":"` + tokAllowed + `","status":"active"}]}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := acl.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := authz.NewServer(authz.Config{ACL: a, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })
	return startService(t, node.Config{AuthzURL: "http://" + ln.Addr().String(), ACLStatus: srv.ACLStatus, AllowPrivateCallbacks: true})
}

// promtool finds Debian's promtool (package prometheus); CI installs it
// (.ci/run), so there a missing one fails instead of skipping.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found; .ci/run installs Debian's prometheus package")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The alert rules are valid, and each alert fires on the series that should
// raise it (alerts_test.yml).
func TestDeployAlertRules(t *testing.T) {
	runPromtool(t, filepath.Dir(alertsFile), "check", "rules", filepath.Base(alertsFile))
	runPromtool(t, filepath.Dir(alertsFile), "test", "rules", filepath.Base(alertTestsFile))
}

// The dashboard is well-formed Grafana JSON and every query in it is valid
// PromQL (promtool checks them as recording rules, with Grafana's
// variables filled in).
func TestDeployDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID         int             `json:"id"`
		Type       string          `json:"type"`
		Title      string          `json:"title"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []target        `json:"targets"`
	}
	var dash struct {
		UID    string  `json:"uid"`
		Title  string  `json:"title"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) < 10 {
		t.Fatalf("dashboard uid %q title %q with %d panels", dash.UID, dash.Title, len(dash.Panels))
	}
	ids := map[int]bool{}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	fill := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || len(p.Datasource) == 0 {
			t.Errorf("panel %q: no query or no data source", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q: empty query %s", p.Title, tg.RefID)
			}
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard_panel%d_%s", p.ID, tg.RefID), Expr: fill.Replace(tg.Expr)})
		}
	}
	// JSON is YAML: promtool reads this file as a rules file.
	doc, _ := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.rules.yml"), doc, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "dashboard.rules.yml")
}
