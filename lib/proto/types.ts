/** Package vop.types.v1 (proto/vop/types/v1/types.proto): the objects agent and controller share. Generated code, re-exported. */
export * from '../gen/vop/types/v1/types';
