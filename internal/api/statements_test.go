package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/recording"
)

// TestStatementJoiner: the recorder splits a long statement record into
// several events at one time; the API rebuilds it, adds the time, and
// drops what is not a whole record.
func TestStatementJoiner(t *testing.T) {
	sql := "select '" + strings.Repeat("x", 70<<10) + "'"
	long := `{"sql":"` + sql + `","params":[],"tag":"SELECT 1","rows":1,"error_code":"","duration_ms":1.5}`
	var evs []recording.Event
	for i := 0; i < len(long); i += 32 << 10 {
		evs = append(evs, recording.Event{Time: 2.25, Type: recording.Statement, Data: long[i:min(i+32<<10, len(long))]})
	}
	evs = append([]recording.Event{
		{Time: 1, Type: recording.Statement, Data: `{"sql":"select 1","tag":"SELECT 1"}`},
		{Time: 1.5, Type: recording.Statement, Data: `{"sql":"torn`}, // its rest never came
		{Time: 1.75, Type: recording.Statement, Data: `not json`},
	}, evs...)
	evs = append(evs, recording.Event{Time: 3, Type: recording.Statement, Data: `{}`})
	var j statementJoiner
	var got []map[string]any
	for _, ev := range evs {
		if rec := j.add(ev); rec != nil {
			var m map[string]any
			if err := json.Unmarshal(rec, &m); err != nil {
				t.Fatalf("record %.80q is not JSON: %v", rec, err)
			}
			got = append(got, m)
		}
	}
	if len(got) != 3 {
		t.Fatalf("%d records, want 3: %v", len(got), got)
	}
	if got[0]["time"] != 1.0 || got[0]["sql"] != "select 1" {
		t.Errorf("first = %v", got[0])
	}
	if got[1]["time"] != 2.25 || got[1]["sql"] != sql || got[1]["duration_ms"] != 1.5 {
		t.Errorf("rebuilt record: time %v, sql of %d bytes", got[1]["time"], len(got[1]["sql"].(string)))
	}
	if got[2]["time"] != 3.0 || len(got[2]) != 1 {
		t.Errorf("empty record = %v", got[2])
	}
}
