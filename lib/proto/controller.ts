/**
 * Package vop.controller.v1 (proto/vop/controller/v1/controller.proto): ControllerService, the fleet API,
 * and AgentSyncService, the agents' stream to the controller. Generated code, re-exported.
 */
export * from '../gen/vop/controller/v1/controller';
