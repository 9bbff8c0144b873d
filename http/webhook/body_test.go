package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/chargeauth/chargeauth/session"
)

// stdBody is the body as encoding/json writes it: the reference for Body.
func stdBody(t testing.TB, req session.Request, status session.Status) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		StationID   string `json:"station_id"`
		DriverToken string `json:"driver_token"`
		Status      string `json:"status"`
	}{req.StationID, req.DriverToken, string(status)})
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		station string
		token   string
		status  session.Status
		want    string
	}{
		{
			name:    "plain",
			station: "123e4567-e89b-12d3-a456-426614174000",
			token:   "validDriverToken1234567",
			status:  session.StatusAllowed,
			want:    `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","status":"allowed"}`,
		},
		{
			name:    "token charset",
			station: "123E4567-E89B-12D3-A456-426614174000",
			token:   "a~b.c_d-e~~..__--Z09",
			status:  session.StatusNotAllowed,
			want:    `{"station_id":"123E4567-E89B-12D3-A456-426614174000","driver_token":"a~b.c_d-e~~..__--Z09","status":"not_allowed"}`,
		},
		{
			name:    "escapes",
			station: "q\"b\\s/",
			token:   "\n\r\t\b\f\x00\x1f<>&",
			status:  session.StatusUnknown,
			want:    `{"station_id":"q\"b\\s/","driver_token":"\n\r\t\b\f\u0000\u001f<>&","status":"unknown"}`,
		},
		{
			name:    "unicode",
			station: "é😀\u2028\u2029",
			token:   "bad\xffutf8\xe2\x82",
			status:  session.StatusInvalid,
			want:    `{"station_id":"é😀\u2028\u2029","driver_token":"bad\ufffdutf8\ufffd\ufffd","status":"invalid"}`,
		},
		{name: "empty", want: `{"station_id":"","driver_token":"","status":""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := session.Request{StationID: tc.station, DriverToken: tc.token, CallbackURL: "http://x/"}
			got := Body(req, tc.status)
			if string(got) != tc.want {
				t.Errorf("Body:\n got %s\nwant %s", got, tc.want)
			}
			if std := stdBody(t, req, tc.status); !bytes.Equal(got, std) {
				t.Errorf("Body differs from encoding/json:\n got %s\n std %s", got, std)
			}
		})
	}
}

func FuzzBody(f *testing.F) {
	f.Add("123e4567-e89b-12d3-a456-426614174000", "validDriverToken1234567", "allowed")
	f.Add("\"\\\x00\x7f", "\xff\xfe\u2028", "<&>")
	f.Fuzz(func(t *testing.T, station, token, status string) {
		req := session.Request{StationID: station, DriverToken: token}
		got := Body(req, session.Status(status))
		if std := stdBody(t, req, session.Status(status)); !bytes.Equal(got, std) {
			t.Fatalf("Body differs from encoding/json:\n got %s\n std %s", got, std)
		}
	})
}

func BenchmarkBody(b *testing.B) {
	req := session.Request{
		StationID:   "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: "validDriverToken1234567",
		CallbackURL: "https://example.com/callback",
	}
	b.ReportAllocs()
	for b.Loop() {
		Body(req, session.StatusAllowed)
	}
}

// The test vector of the Standard Webhooks specification.
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = 1614265330
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignSpecVector(t *testing.T) {
	key, err := ParseSecret(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := Sign(key, specID, specTS, []byte(specBody)); got != specSig {
		t.Fatalf("Sign = %s, want %s", got, specSig)
	}
}

// verifySignature recomputes a "v1," signature independently of Sign.
func verifySignature(t *testing.T, key []byte, id, ts string, body []byte, sig string) {
	t.Helper()
	enc, ok := strings.CutPrefix(sig, "v1,")
	if !ok {
		t.Fatalf("signature %q has no v1, prefix", sig)
	}
	got, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("signature %q: %v", sig, err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	if !hmac.Equal(got, mac.Sum(nil)) {
		t.Fatalf("signature %q does not verify", sig)
	}
}

func TestParseSecret(t *testing.T) {
	key24 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 24))
	for _, tc := range []struct {
		name    string
		in      string
		wantLen int // 0: want an error
	}{
		{"spec", specSecret, 24},
		{"padded", "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)), 32},
		{"unpadded", "whsec_" + base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)), 32},
		{"no prefix", key24, 0},
		{"wrong prefix", "whsk_" + key24, 0},
		{"empty", "", 0},
		{"prefix only", "whsec_", 0},
		{"url alphabet", "whsec_" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 24)), 0},
		{"not base64", "whsec_!!!!", 0},
		{"too short", "whsec_" + base64.StdEncoding.EncodeToString([]byte("short")), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ParseSecret(tc.in)
			if tc.wantLen == 0 {
				if !errors.Is(err, ErrSecret) {
					t.Fatalf("ParseSecret(%q) = %v, want ErrSecret", tc.in, err)
				}
				if len(tc.in) > len("whsec_")+4 && strings.Contains(err.Error(), tc.in[len(tc.in)-4:]) {
					t.Errorf("error %q shows the secret", err)
				}
				return
			}
			if err != nil || len(key) != tc.wantLen {
				t.Fatalf("ParseSecret(%q) = %d bytes, %v; want %d bytes", tc.in, len(key), err, tc.wantLen)
			}
		})
	}
}
