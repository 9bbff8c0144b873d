package persistence

import (
	"encoding/json"
	"fmt"

	"github.com/chargeauth/chargeauth/session"
)

// Key prefixes. See doc.go for the layout.
const (
	recordPrefix = "r/"
	indexPrefixS = "s/"
)

// recordKey appends r/<id> to buf.
func recordKey(buf []byte, id string) []byte {
	buf = append(buf, recordPrefix...)
	return append(buf, id...)
}

// indexPrefix appends s/<state>/ to buf.
func indexPrefix(buf []byte, st session.State) []byte {
	buf = append(buf, indexPrefixS...)
	buf = append(buf, st...)
	return append(buf, '/')
}

// indexKey appends s/<state>/<id> to buf.
func indexKey(buf []byte, st session.State, id string) []byte {
	return append(indexPrefix(buf, st), id...)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// for an exclusive upper bound. p ends in '/', which is never 0xff.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

// idAfter returns the smallest key greater than prefix+id: an inclusive lower
// bound that excludes prefix+id itself.
func idAfter(prefix []byte, id string) []byte {
	k := append(append([]byte(nil), prefix...), id...)
	return append(k, 0)
}

// encodeRecord is the value stored under r/<id>.
func encodeRecord(rec *session.Record) ([]byte, error) {
	v, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("persistence: encode %s: %w", rec.ID, err)
	}
	return v, nil
}

// decodeRecord reads a value stored under r/<id>. v may be reused by Pebble
// after the call: decodeRecord copies what it keeps.
func decodeRecord(id string, v []byte) (session.Record, error) {
	var rec session.Record
	if err := json.Unmarshal(v, &rec); err != nil {
		return session.Record{}, fmt.Errorf("persistence: decode %s: %w", id, err)
	}
	return rec, nil
}
