package audit

// Origin says who asks, from where, in which request. Domain operations
// take one and copy it into every event they write.
type Origin struct {
	Actor     string // "user:alice", "machine:ci", "system:dev"; "" means anonymous
	Source    string // client IP address
	RequestID string
}

// Event returns an event from o with the given action, resource, outcome
// and details.
func (o Origin) Event(action, resource, outcome string, details map[string]string) Event {
	actor := o.Actor
	if actor == "" {
		actor = "anonymous"
	}
	return Event{Actor: actor, Action: action, Resource: resource, Outcome: outcome, Source: o.Source, RequestID: o.RequestID, Details: details}
}
