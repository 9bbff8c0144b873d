package session

import (
	"bytes"
	"encoding/json"
	"testing"
)

// stdJSONString is s as encoding/json writes it with SetEscapeHTML(false).
func stdJSONString(t testing.TB, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestAppendJSONString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"validDriverToken1234567", `"validDriverToken1234567"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x1f\x7f", `"\u0000\u001f` + "\x7f" + `"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"\xff\xfeé", `"\ufffd\ufffdé"`},
		{"<&>", `"<&>"`},
	} {
		got := AppendJSONString([]byte("x"), tc.in)
		if string(got) != "x"+tc.want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", tc.in, got[1:], tc.want)
		}
		if std := stdJSONString(t, tc.in); string(std) != tc.want {
			t.Errorf("encoding/json(%q) = %s, table says %s", tc.in, std, tc.want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "\"\\\x00\x7f", "\xff\xfe\u2028\u2029", "<&>", "é\U0001F600\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, std := AppendJSONString(nil, s), stdJSONString(t, s); !bytes.Equal(got, std) {
			t.Fatalf("%q: got %s, encoding/json %s", s, got, std)
		}
	})
}

// BenchmarkAppendJSONString compares ours with encoding/json on a driver
// token, the longest string of a callback body.
func BenchmarkAppendJSONString(b *testing.B) {
	const s = "validDriverToken1234567"
	b.Run("impl=ours", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for b.Loop() {
			buf = AppendJSONString(buf[:0], s)
		}
	})
	b.Run("impl=encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for b.Loop() {
			q, err := json.Marshal(s) // HTML escaping never applies to s
			if err != nil {
				b.Fatal(err)
			}
			buf = append(buf[:0], q...)
		}
	})
}
