// Package errkind classifies errors by what a caller can do about them.
//
// Domain packages wrap their errors with a Kind; only the api package maps a
// Kind to an HTTP status. The list of kinds only grows: callers branch on them.
package errkind

import (
	"errors"
	"fmt"
)

// Kind is the class of an error.
type Kind uint8

// The kinds. Other means "unexpected": the API shows a generic message.
const (
	Other           Kind = iota // an internal failure; details are logged, never shown
	Invalid                     // the request is malformed or breaks a rule
	NotFound                    // the named thing does not exist
	Unauthenticated             // no valid credential was presented
	Denied                      // the caller is known but not allowed
	Conflict                    // the request conflicts with current state
	Sealed                      // the server is sealed
	Unavailable                 // a dependency is down; try again later
	TooLarge                    // the request exceeds a size limit
	RateLimited                 // too many attempts; try again later
)

var names = [...]string{
	Other:           "internal",
	Invalid:         "invalid",
	NotFound:        "not_found",
	Unauthenticated: "unauthenticated",
	Denied:          "denied",
	Conflict:        "conflict",
	Sealed:          "sealed",
	Unavailable:     "unavailable",
	TooLarge:        "too_large",
	RateLimited:     "rate_limited",
}

// String returns the stable code used in API error bodies.
func (k Kind) String() string {
	if int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Error is an error with a Kind. Its message is the wrapped error's message.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New returns an error of kind k whose message is fmt.Sprintf(format, args...).
// %w in format wraps as with fmt.Errorf.
func New(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// Wrap gives err the kind k. It returns nil when err is nil.
func Wrap(k Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Err: err}
}

// Of returns the kind of the outermost *Error in err's chain, or Other.
func Of(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Other
}

// Is reports whether err has kind k.
func Is(err error, k Kind) bool { return err != nil && Of(err) == k }
