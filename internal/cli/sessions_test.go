package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/recording"
)

// sftpRecording is a recorded SFTP session as the SSH gateway writes it:
// File events (one split in two at the same time, as the recorder splits
// long data) and a Note.
const sftpRecording = `{"version":2,"width":80,"height":24,"timestamp":1767225600,"title":"alice@web1"}
[0.100000, "f", "{\"op\":\"open\",\"path\":\"/tmp/up.bin\",\"flags\":\"wct\"}"]
[0.900000, "f", "{\"op\":\"close\",\"path\":\"/tmp/up.bin\",\"written\":3145735}"]
[1.200000, "f", "{\"op\":\"rename\",\"path\":\"/tmp/a\","]
[1.200000, "f", "\"to\":\"/tmp/b\"}"]
[1.300000, "f", "{\"op\":\"remove\",\"path\":\"/tmp/\\u001b[2Jevil\"}"]
[1.400000, "n", "{\"event\":\"exit\",\"status\":\"0\"}"]
`

func TestSessionFiles(t *testing.T) {
	_, events, err := recording.DecodeAsciicast(strings.NewReader(sftpRecording))
	if err != nil {
		t.Fatal(err)
	}
	got := sessionFiles(append(events, recording.Event{Time: 2, Type: recording.File, Data: `{"op":"open","pa`}))
	want := []sessionFile{
		{Time: 0.1, Op: "open", Path: "/tmp/up.bin", Flags: "wct"},
		{Time: 0.9, Op: "close", Path: "/tmp/up.bin", Written: 3145735},
		{Time: 1.2, Op: "rename", Path: "/tmp/a", To: "/tmp/b"},
		{Time: 1.3, Op: "remove", Path: "/tmp/\x1b[2Jevil"},
		{Time: 2, Unreadable: true}, // torn: its rest never came
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// sessionFake serves one SFTP session and one interactive session, with
// their recordings, and counts the recording downloads.
type sessionFake struct {
	recordings int
}

func (f *sessionFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	started := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	switch r.URL.Path {
	case "/v1/sessions/s1":
		json.NewEncoder(w).Encode(map[string]any{"id": "s1", "kind": "ssh", "principal": "user:alice", "target": "web1",
			"account": "alice", "command": sftpCommand, "started_at": started, "status": "closed"})
	case "/v1/sessions/s1/recording":
		f.recordings++
		w.Write([]byte(sftpRecording))
	case "/v1/sessions/s2":
		json.NewEncoder(w).Encode(map[string]any{"id": "s2", "kind": "ssh", "principal": "user:alice", "target": "web1",
			"account": "alice", "pty": true, "started_at": started, "status": "closed", "commands": []string{"uptime"}})
	case "/v1/sessions/s2/recording":
		f.recordings++
		w.Write([]byte(sftpRecording))
	default:
		w.WriteHeader(404)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "not_found", "message": "no such endpoint"}})
	}
}

// TestSessionShowFiles: `session show` lists the file operations of an
// SFTP session, in text and JSON, and reads no recording for another
// session.
func TestSessionShowFiles(t *testing.T) {
	f := &sessionFake{}
	serveCLI(t, f, "wt1.alice.secret")

	r := runCLI("", "session", "show", "s1")
	if r.code != 0 {
		t.Fatalf("session show: exit %d, stderr %q", r.code, r.stderr)
	}
	at := func(sec float64) string {
		return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(sec * float64(time.Second))).Local().Format("15:04:05.000")
	}
	for _, want := range []string{
		"\nFile operations:\n",
		"1  " + at(0.1) + "  open    mode wct",
		"2  " + at(0.9) + "  close   read 0 B, written 3145735 B  /tmp/up.bin\n",
		"3  " + at(1.2) + "  rename  -",
		"/tmp/a -> /tmp/b\n",
		`"/tmp/\x1b[2Jevil"`,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("session show lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Error("a file name wrote an escape sequence to the terminal")
	}

	r = runCLI("", "session", "show", "s1", "--format", "json")
	var got struct {
		ID    string        `json:"id"`
		Files []sessionFile `json:"files"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.ID != "s1" || len(got.Files) != 4 || got.Files[1].Written != 3145735 || got.Files[1].Time != 0.9 {
		t.Errorf("json: %v, %+v\n%s", err, got, r.stdout)
	}

	// An interactive session: its commands, and no recording downloaded.
	n := f.recordings
	r = runCLI("", "session", "show", "s2")
	if r.code != 0 || !strings.Contains(r.stdout, "uptime\n") || strings.Contains(r.stdout, "File operations") || f.recordings != n {
		t.Errorf("interactive session: exit %d, %d downloads\n%s", r.code, f.recordings-n, r.stdout)
	}
}
