package api

import "context"

// SetLookupHost replaces the resolver of peer names (tests).
func SetLookupHost(c *Config, f func(context.Context, string) ([]string, error)) { c.lookupHost = f }
