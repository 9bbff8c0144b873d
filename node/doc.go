// Package node is a chargeauth node: the one place where the parts are
// built and wired together. node.Start reads top to bottom as one request
// flows through them:
//
//	listeners bound  (public, admin; the embedded authorization service unless Config.AuthzURL)
//	persistence.Open                    the store: a POST is acknowledged once written here
//	api.New → AdminServer serves        health, readiness (503 until resumed), metrics, sessions
//	authz.NewClient, webhook.New        how a request is decided, how its callback is sent
//	actors.Start                        resumes from the store; request actors call the
//	                                    authorization client, persist the decision and hand
//	                                    the callback to the sender on the retry schedule
//	api.PublicServer(engine) serves     POST/GET /charge_point/session/ in front of the engine
//	retain                              deletes old records and expired idempotency keys
//
// Close undoes it in the other order: the public listener stops, in-flight
// work gets ShutdownGrace, the engine stops, the store closes, the admin
// listener and the embedded authorization service stop last.
//
// Config holds every setting of a node once: a tagged field is a setting
// with its flag name, default and doc. The serve command binds its flags
// (and CHARGEAUTH_* variables) from it with Config.Bind, checks it with
// Config.Validate, which reports every problem at once, and starts the node;
// each package then gets only its part (persistence.Config, actors.Config,
// webhook.Config, authz.ClientConfig, api.Config).
//
// ScaleGOMAXPROCS is the runtime setting serve and the bench apply before
// a node starts; ReexecWithSysmonAwake, the one chargeauth's main applies
// to serve and authz before anything else (a GODEBUG setting, read only
// when a process starts).
package node
