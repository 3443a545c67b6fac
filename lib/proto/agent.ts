/** Package vop.agent.v1 (proto/vop/agent/v1/agent.proto): AgentService, the per-node API. Generated code, re-exported. */
export * from '../gen/vop/agent/v1/agent';
